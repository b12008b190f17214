"""The OpenI reports with the project's label sets and their MeSH truth, and the label-set cache.

Running the report labelers over 3,955 reports takes minutes, so their label sets are cached
(``.npz``) under a key that covers the texts and the labelers' own source: a changed rule never
reuses stale labels. A saved label-set file carries a fingerprint of the texts it was made from, so
label sets are never paired with other reports. Report text stays in memory; nothing here logs it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from l2v_monai.findings import CHEXPERT_FINDINGS

__all__ = [
    "ReportCorpus",
    "cached_label_sets",
    "default_cache_dir",
    "label_sets_digest",
    "load_openi_corpus",
    "read_label_sets",
    "text_fingerprint",
    "synthetic_label_sets",
    "write_label_sets",
]

#: Bump when the way label sets are computed from texts changes, so old caches are not reused.
CACHE_FORMAT = 1


@dataclass
class ReportCorpus:
    """Reports (texts kept in memory only), their ``S × M × N`` label sets and ``S × N`` truth (NaN = unlabelled)."""

    ids: list[str]
    texts: list[str]
    label_sets: np.ndarray
    set_names: list[str]
    truth: np.ndarray
    findings: list[str]
    #: Reports left out and why (counts only; never their text).
    excluded: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = len(self.texts)
        if len(self.ids) != s or self.label_sets.shape[0] != s or self.truth.shape[0] != s:
            raise ValueError(
                f"corpus parts disagree on the number of reports: {len(self.ids)} ids, {s} texts, "
                f"{self.label_sets.shape[0]} label-set rows, {self.truth.shape[0]} truth rows"
            )
        if self.label_sets.shape[1:] != (len(self.set_names), len(self.findings)):
            raise ValueError(
                f"label sets have shape {self.label_sets.shape}, expected S × {len(self.set_names)} sets × "
                f"{len(self.findings)} findings"
            )


def default_cache_dir() -> Path:
    """``$L2V_CACHE`` or ``$XDG_CACHE_HOME/l2v_monai`` (``~/.cache/l2v_monai``): derived data, never committed."""
    if os.environ.get("L2V_CACHE"):
        return Path(os.environ["L2V_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "l2v_monai"


def text_fingerprint(texts: Sequence[str], extra: str) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}|{extra}|".encode())
    for text in texts:
        h.update(hashlib.sha256(text.encode()).digest())
    return h.hexdigest()[:20]


def _labelers_version() -> str:
    """A hash of the labelers' source, so that a changed rule or list invalidates cached label sets."""
    import l2v_monai.labelers as labelers

    root = Path(labelers.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json", ".txt", ".csv", ".tsv", ".yaml", ".yml"):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cached_label_sets(
    texts: Sequence[str],
    cache_dir: Path,
    compute: Callable[[Sequence[str]], tuple[np.ndarray, list[str]]] | None = None,
    version: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The labelers' four label sets for ``texts``, computed once and cached in ``cache_dir`` (``.npz``).

    The cache key covers the texts and the labelers' source, so stale label sets are never reused.
    """
    if compute is None:
        from l2v_monai.labelers import label_sets

        def compute(xs: Sequence[str]) -> tuple[np.ndarray, list[str]]:
            return label_sets(list(xs), progress=False)

        version = version or _labelers_version()
    path = Path(cache_dir) / f"report_label_sets_{text_fingerprint(texts, version or 'custom')}.npz"
    if path.is_file():
        return read_label_sets(path, texts)
    labels, names = compute(texts)
    labels = np.asarray(labels, dtype=np.float32)
    if labels.shape[0] != len(texts):
        raise ValueError(f"the labelers returned {labels.shape[0]} rows for {len(texts)} reports")
    write_label_sets(path, texts, labels, names)
    return labels, list(names)


def write_label_sets(path: str | Path, texts: Sequence[str], labels: np.ndarray, names: Sequence[str]) -> Path:
    """Save label sets with a fingerprint of the texts they were made from (``.npz``, written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, labels=np.asarray(labels, np.float32), names=np.array(list(names)),
                        texts=np.array(text_fingerprint(texts, "texts")))
    tmp.replace(path)
    return path


def read_label_sets(path: str | Path, texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Label sets saved by :func:`write_label_sets`; an error if they were made from other texts."""
    with np.load(path, allow_pickle=False) as data:
        labels, names = data["labels"].astype(np.float32), [str(x) for x in data["names"]]
        made_from = str(data["texts"]) if "texts" in data else None
    if made_from is None:
        raise ValueError(f"{path}: no fingerprint of the texts it was made from; label the reports again")
    if made_from != text_fingerprint(texts, "texts") or labels.shape[0] != len(texts):
        raise ValueError(f"{path}: label sets made from other report texts ({labels.shape[0]} rows for {len(texts)} reports)")
    return labels, names


def label_sets_digest(labels: np.ndarray) -> str:
    """A short hash of a label-set array, so that tables merged from several runs can prove they share one."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.float32).tobytes()).hexdigest()[:16]


def load_openi_corpus(
    archive: str | Path,
    cache_dir: str | Path | None = None,
    findings: Sequence[str] = CHEXPERT_FINDINGS,
    label_source: str = "labelers",
    seed: int = 0,
    label_file: str | Path | None = None,
) -> ReportCorpus:
    """The OpenI reports with their label sets and MeSH truth.

    ``label_source="labelers"`` runs :func:`l2v_monai.labelers.label_sets` (cached under
    ``cache_dir``); ``"synthetic"`` draws :func:`synthetic_label_sets` from the truth instead (a
    stand-in for developing the harness, never for reported numbers). Reports whose FINDINGS and
    IMPRESSION are both empty have nothing to label; they are left out and counted in ``excluded``.
    ``label_file`` pins the label sets: read from it when it exists, else labelled and written
    there, so that runs split over processes (and over labeler edits) share one set of labels.
    """
    from l2v_monai.data.openi import read_openi_reports

    reports = read_openi_reports(archive)
    ids, texts, truth = [], [], []
    excluded: dict[str, int] = {}
    for report in reports:
        text = report.text
        if not text.strip():
            excluded["no FINDINGS or IMPRESSION text"] = excluded.get("no FINDINGS or IMPRESSION text", 0) + 1
            continue
        ids.append(report.uid)
        texts.append(text)
        truth.append(report.mesh_labels(list(findings), archive))
    truth_arr = np.stack(truth).astype(np.float32)
    if label_source == "labelers" and label_file is not None and Path(label_file).is_file():
        labels, names = read_label_sets(label_file, texts)
    elif label_source == "labelers":
        labels, names = cached_label_sets(texts, Path(cache_dir) if cache_dir else default_cache_dir())
        if label_file is not None:
            write_label_sets(label_file, texts, labels, names)
        if list(findings) != list(CHEXPERT_FINDINGS):
            raise ValueError("the labelers give the 14 CheXpert findings; pass findings=CHEXPERT_FINDINGS")
    elif label_source == "synthetic":
        labels, names = synthetic_label_sets(truth_arr, seed)
    else:
        raise ValueError(f"label_source must be 'labelers' or 'synthetic', got {label_source!r}")
    return ReportCorpus(ids, texts, labels, names, truth_arr, list(findings), excluded)


def synthetic_label_sets(truth: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Four seeded noisy copies of ``truth`` shaped like two labelers × uncertain → 0/1.

    Unlabelled truth counts as negative (a report that is not tagged rarely mentions the finding).
    Labeler ``a`` reads positives as certain 70 %, uncertain 20 %, missed 10 %; labeler ``b`` is more
    conservative (55 / 25 / 20 %). Each calls 3 % (``a``) or 2 % (``b``) of negatives uncertain and
    1 % positive. A stand-in for harness development and tests only.
    """
    rng = np.random.default_rng(seed)
    y = np.nan_to_num(truth, nan=0.0) == 1
    sets, names = [], []
    for name, (certain, uncertain, doubt, false_pos) in {"a": (0.7, 0.2, 0.03, 0.01), "b": (0.55, 0.25, 0.02, 0.01)}.items():
        r = rng.random(y.shape)
        mention = np.where(y, np.where(r < certain, 1, np.where(r < certain + uncertain, -1, 0)),
                           np.where(r < doubt, -1, np.where(r < doubt + false_pos, 1, 0)))
        sets += [np.where(mention == -1, 0, mention), np.where(mention == -1, 1, mention)]
        names += [f"{name}_u0", f"{name}_u1"]
    return np.stack(sets, axis=1).astype(np.float32), names
