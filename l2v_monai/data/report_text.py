"""Radiology report text: keep the FINDINGS and IMPRESSION sections, mask de-identification tokens.

Two sources are handled:

* **MIMIC-CXR** free-text reports, where a section starts with an upper-case header followed by a
  colon at the start of a line (``FINDINGS:``, ``IMPRESSION:``). A few synonymous headers are
  folded in (see ``FINDINGS_HEADERS`` / ``IMPRESSION_HEADERS``). When a report has neither section,
  its **last paragraph** is kept instead, the fallback MIMIC-CXR's own section parser uses, because
  short reports often end with an unlabelled conclusion.
* **OpenI** XML reports, whose sections are ``AbstractText`` elements with a ``Label`` attribute.

De-identification placeholders (``___`` runs in MIMIC, ``XXXX`` runs in OpenI) become the single
token ``[DEID]``, so that a text model sees one consistent "redacted" symbol. Whitespace is
normalised to single spaces.

Nothing here logs report text; errors name the file only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

DEID_TOKEN = "[DEID]"

# MIMIC redacts with runs of underscores ("___"); OpenI with runs of upper-case X ("XXXX"), sometimes
# glued to a word ("XXXXyo"). Three or more of either is never ordinary prose.
_MIMIC_DEID = re.compile(r"_{3,}")
_OPENI_DEID = re.compile(r"X{3,}")
# Two placeholders separated only by whitespace stand for one redacted span.
_REPEATED_DEID = re.compile(rf"{re.escape(DEID_TOKEN)}(?:\s*{re.escape(DEID_TOKEN)})+")
_WHITESPACE = re.compile(r"\s+")
# A MIMIC section header: upper-case words (and a few separators) then a colon, at a line start.
_MIMIC_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/,&-]*[A-Z)])[ \t]*:", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

FINDINGS_HEADERS: frozenset[str] = frozenset({"FINDINGS", "FINDING"})
IMPRESSION_HEADERS: frozenset[str] = frozenset(
    {"IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "FINDINGS AND IMPRESSION", "IMPRESSION AND FINDINGS"}
)
# Order in which kept sections are written into the cleaned text.
KEPT_SECTIONS: tuple[str, ...] = ("FINDINGS", "IMPRESSION")


def normalise_whitespace(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space and strip the ends."""
    return _WHITESPACE.sub(" ", text).strip()


def mask_deidentification(text: str) -> str:
    """Replace ``___`` (MIMIC) and ``XXXX`` (OpenI) runs by one ``[DEID]`` token each.

    Placeholders separated only by whitespace merge into one token.
    """
    masked = _OPENI_DEID.sub(DEID_TOKEN, _MIMIC_DEID.sub(DEID_TOKEN, text))
    return _REPEATED_DEID.sub(DEID_TOKEN, masked)


def _canonical_section(header: str) -> str | None:
    """Map a header to ``FINDINGS`` / ``IMPRESSION``, or ``None`` for sections that are not kept."""
    name = normalise_whitespace(header).upper()
    if name in FINDINGS_HEADERS:
        return "FINDINGS"
    if name in IMPRESSION_HEADERS:
        return "IMPRESSION"
    return None


def split_mimic_sections(text: str) -> list[tuple[str, str]]:
    """Split a MIMIC report into ``(header, body)`` pairs in file order; text before the first header is ``""``.

    Headers are returned as written (upper case); bodies are raw (not normalised).
    """
    sections: list[tuple[str, str]] = []
    matches = list(_MIMIC_HEADER.finditer(text))
    start = 0
    header = ""
    for match in matches:
        sections.append((header, text[start : match.start()]))
        header, start = match.group(1), match.end()
    sections.append((header, text[start:]))
    return [(name, body) for name, body in sections if name or body.strip()]


def _join_sections(sections: Iterable[tuple[str, str]]) -> str:
    """Write kept sections as ``FINDINGS: ... IMPRESSION: ...`` (in ``KEPT_SECTIONS`` order), cleaned."""
    bodies: dict[str, list[str]] = {name: [] for name in KEPT_SECTIONS}
    for name, body in sections:
        body = normalise_whitespace(body)
        if body:
            bodies[name].append(body)
    parts = [f"{name}: {' '.join(bodies[name])}" for name in KEPT_SECTIONS if bodies[name]]
    return normalise_whitespace(mask_deidentification(" ".join(parts)))


def last_paragraph(text: str) -> str:
    """The last non-empty paragraph (blank-line separated) of a report, raw."""
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    return paragraphs[-1] if paragraphs else ""


def clean_mimic_report(text: str, fallback: str = "last_paragraph") -> str:
    """Cleaned MIMIC report: ``FINDINGS: ... IMPRESSION: ...``, de-identification masked, whitespace normalised.

    When the report has neither a findings nor an impression section, ``fallback`` decides:
    ``"last_paragraph"`` (default, MIMIC-CXR's convention) keeps the last paragraph, ``"full"`` keeps
    the whole text (useful for free-text hospital reports without headers), ``"empty"`` returns ``""``.
    """
    if fallback not in ("last_paragraph", "full", "empty"):
        raise ValueError(f"fallback must be 'last_paragraph', 'full' or 'empty', got {fallback!r}")
    kept = [
        (canonical, body)
        for header, body in split_mimic_sections(text)
        if header and (canonical := _canonical_section(header)) is not None
    ]
    if any(normalise_whitespace(body) for _, body in kept):
        return _join_sections(kept)
    if fallback == "empty":
        return ""
    raw = last_paragraph(text) if fallback == "last_paragraph" else text
    return normalise_whitespace(mask_deidentification(raw))


def clean_openi_sections(sections: Mapping[str, str | None]) -> str:
    """Cleaned OpenI report from its ``AbstractText`` sections keyed by ``Label`` (e.g. ``"FINDINGS"``).

    Only FINDINGS and IMPRESSION are kept; empty or missing sections are left out.
    """
    kept = []
    for label, body in sections.items():
        canonical = _canonical_section(label)
        if canonical is not None and body:
            kept.append((canonical, body))
    return _join_sections(kept)


def read_report_file(path: str | Path, fallback: str = "last_paragraph") -> str:
    """Read a MIMIC-style ``.txt`` report and clean it; a missing or unreadable file names the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise FileNotFoundError(f"report file not found: {path}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"report file is not UTF-8 text: {path} (byte {error.start})") from None
    return clean_mimic_report(text, fallback=fallback)
