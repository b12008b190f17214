"""A hospital's own chest X-rays: one manifest CSV → a datalist with several label sets.

The manifest has one row per image and these columns:

* ``image`` (required): the image path, absolute or relative to the manifest's folder.
* ``report`` (optional): a report. A cell that ends in ``.txt`` (any case) and holds no line break
  is a **path** to a text file (relative to the manifest's folder or absolute) that must exist;
  any other cell is the report **text** itself. Either way the FINDINGS and IMPRESSION sections are
  kept when the text has MIMIC-style headers, otherwise the whole text (see
  ``l2v_monai.data.report_text.clean_mimic_report`` with ``fallback="full"``).
* ``split`` (optional): train / training, validate / validation / val, test. Without it every row
  goes to ``default_split``.
* ``study_id`` (optional): copied to the item.
* ``patient_id``, ``view``, ``sex``, ``age_band``, ``site``, ``scanner`` (optional): copied to the
  item when not blank; the evaluation resamples whole patients and reports AUC per subgroup.
* Label columns ``<set>/<finding>``, e.g. ``reader1/Atelectasis``: one group per label set, every
  group with the same findings. The group named ``label`` (``label/<finding>``), when present, is
  the clean (hand) label of the image and goes to the item's ``label`` vector, not to ``labels``.

Label cells are 1, 0, -1 (uncertain) or blank (missing). Uncertain becomes missing by default
(``uncertain="missing"``), or 0 or 1. The clean ``label`` group may only hold 1, 0 or blank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.data.datalist import (
    NEGATIVE,
    POSITIVE,
    SPLITS,
    UNCERTAIN,
    Datalist,
    DatalistSourceError,
    ExclusionLog,
    csv_line,
    decode_utf8_text,
    labels_to_json,
    normalise_split,
    parse_label_value,
    raise_on_duplicates,
    read_csv_table,
    require_splits,
)
from l2v_monai.data.report_text import clean_mimic_report

GROUP_SEPARATOR = "/"
CLEAN_LABEL_GROUP = "label"
# Item metadata copied as it is: the patient (for patient-level intervals) and subgroups to report.
METADATA_COLUMNS = ("study_id", "patient_id", "view", "sex", "age_band", "site", "scanner")
PLAIN_COLUMNS: frozenset[str] = frozenset({"image", "report", "split", *METADATA_COLUMNS})
UNCERTAIN_POLICIES: dict[str, float] = {"missing": math.nan, "0": 0.0, "1": 1.0}
REPORT_PATH_SUFFIX = ".txt"


def uncertain_value(policy: str | float) -> float:
    """``"missing"`` / ``"0"`` / ``"1"`` (or 0, 1, NaN) → the value an uncertain (-1) label becomes."""
    if isinstance(policy, (int, float)) and not isinstance(policy, bool):
        if math.isnan(policy) or policy in (0, 1):
            return float(policy)
    elif str(policy).strip().lower() in UNCERTAIN_POLICIES:
        return UNCERTAIN_POLICIES[str(policy).strip().lower()]
    raise ValueError(f"uncertain policy must be 'missing', 0 or 1, got {policy!r}")


def label_column_groups(columns: Sequence[str], path: str | Path = "manifest") -> dict[str, list[str]]:
    """``<set>/<finding>`` columns → ``{set: [findings in column order]}``, sets in order of appearance.

    Any other column that is not one of ``PLAIN_COLUMNS`` (image, report, split and the metadata) raises, so that a typo
    (``reader1-Atelectasis``) cannot silently drop a label column.
    """
    groups: dict[str, list[str]] = {}
    unknown = []
    for column in columns:
        if column in PLAIN_COLUMNS:
            continue
        name, separator, finding = column.partition(GROUP_SEPARATOR)
        if not separator or not name.strip() or not finding.strip():
            unknown.append(column)
            continue
        groups.setdefault(name.strip(), []).append(finding.strip())
    if unknown:
        raise DatalistSourceError(
            path,
            f"column(s) {unknown} are neither {sorted(PLAIN_COLUMNS)} nor label columns '<set>/<finding>'",
            [1],
        )
    return groups


def check_label_groups(
    groups: dict[str, list[str]], findings: Sequence[str] | None, path: str | Path = "manifest"
) -> list[str]:
    """Check every group has the same findings (or exactly ``findings``); return the finding order.

    Without ``findings`` the order is that of the first group. A group with missing, extra or
    repeated findings raises naming the group and the differences.
    """
    if not groups:
        raise DatalistSourceError(path, "has no label columns '<set>/<finding>'", [1])
    expected = list(findings) if findings is not None else next(iter(groups.values()))
    for name, columns in groups.items():
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        missing = [f for f in expected if f not in columns]
        extra = [c for c in columns if c not in expected]
        if repeated or missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unexpected {extra}")
            if repeated:
                parts.append(f"repeated {repeated}")
            reference = "the given findings" if findings is not None else f"label set {next(iter(groups))!r}"
            raise DatalistSourceError(
                path, f"label set {name!r} does not have the same findings as {reference}: {'; '.join(parts)}", [1]
            )
    return expected


def _report_text(cell: str, base: Path, path: Path, line: int) -> str:
    """A report cell → cleaned text; ``*.txt`` single-line cells are paths that must exist."""
    if cell.lower().endswith(REPORT_PATH_SUFFIX) and "\n" not in cell:
        report_path = Path(cell) if Path(cell).is_absolute() else base / cell
        if not report_path.is_file():
            raise DatalistSourceError(path, f"report file not found: {report_path}", [line])
        try:
            text = decode_utf8_text(report_path, report_path.read_bytes(), fix="save it as UTF-8 text")
        except DatalistSourceError as error:  # name the manifest line that points at the file too
            raise DatalistSourceError(path, f"report file {error}", [line]) from None
    else:
        text = cell
    return clean_mimic_report(text, fallback="full")


def build_manifest_datalist(
    manifest: str | Path,
    findings: Sequence[str] | None = None,
    uncertain: str | float = "missing",
    default_split: str = "training",
    check_images: bool = True,
    allow_empty_splits: bool = False,
    allow_missing_reports: bool = False,
) -> Datalist:
    """Read and validate a manifest CSV (see the module docstring) → datalist.

    Args:
        manifest: the CSV path.
        findings: expected finding names (every group must have exactly these; output in this order);
            ``None`` infers them from the first label group.
        uncertain: what -1 becomes in the noisy label sets: ``"missing"`` (default), 0 or 1.
        default_split: the split of every row when there is no ``split`` column.
        check_images: raise naming the line when an image file does not exist.
        allow_empty_splits: accept empty splits. Otherwise every split must be non-empty when the
            manifest has a ``split`` column, and ``default_split`` when it has none.
        allow_missing_reports: accept blank ``report`` cells (the item then has no ``report``);
            by default a blank cell raises, since a report model needs every report.

    Raises ``DatalistSourceError`` naming the manifest and lines for: missing ``image`` column,
    blank or duplicated image paths, missing image or report files, unknown split names, label values
    outside {1, 0, -1, blank} (or -1 in the clean ``label`` group), label groups with different findings.
    """
    path = Path(manifest)
    uncertain_as = uncertain_value(uncertain)
    default_key = normalise_split(default_split)
    if default_key is None:
        raise ValueError(f"default_split {default_split!r} is not one of {SPLITS}")
    frame = read_csv_table(path, ("image",), what="manifest")
    groups = label_column_groups(list(frame.columns), path)
    clean_findings = groups.pop(CLEAN_LABEL_GROUP, None)
    order = check_label_groups(groups, findings, path) if groups else None
    if clean_findings is not None:
        order = check_label_groups({CLEAN_LABEL_GROUP: clean_findings, **groups}, order or findings, path)
    if order is None:
        raise DatalistSourceError(path, "has no label columns '<set>/<finding>'", [1])
    set_names = list(groups)

    images = frame["image"]
    blank_images = [csv_line(index) for index, image in enumerate(images) if not image]
    if blank_images:
        raise DatalistSourceError(path, "blank image path", blank_images)
    raise_on_duplicates(path, "image", images)

    # Parse every label cell first, so that one bad value anywhere fails before any file is checked.
    noisy = np.full((len(frame), len(set_names), len(order)), math.nan)
    for set_index, name in enumerate(set_names):
        for finding_index, finding in enumerate(order):
            column = f"{name}{GROUP_SEPARATOR}{finding}"
            for index, cell in enumerate(frame[column]):
                noisy[index, set_index, finding_index] = _parse(
                    cell, path, column, index, (POSITIVE, NEGATIVE, UNCERTAIN)
                )
    noisy[noisy == UNCERTAIN] = uncertain_as
    clean = None
    if clean_findings is not None:
        clean = np.full((len(frame), len(order)), math.nan)
        for finding_index, finding in enumerate(order):
            column = f"{CLEAN_LABEL_GROUP}{GROUP_SEPARATOR}{finding}"
            for index, cell in enumerate(frame[column]):
                clean[index, finding_index] = _parse(cell, path, column, index, (POSITIVE, NEGATIVE))

    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    base = path.parent
    for index, row in enumerate(frame.records()):
        line = csv_line(index)
        image = Path(row["image"]) if Path(row["image"]).is_absolute() else base / row["image"]
        if check_images and not image.is_file():
            raise DatalistSourceError(path, f"image file missing: {image}", [line])
        split = default_key
        if "split" in row:
            split = normalise_split(row["split"])
            if split is None:
                raise DatalistSourceError(path, f"split {row['split']!r} is not one of train/validate/test", [line])
        item: dict[str, Any] = {"image": str(image)}
        for column in METADATA_COLUMNS:
            if row.get(column):
                item[column] = row[column]
        if "report" in row:
            if row["report"]:
                item["report"] = _report_text(row["report"], base, path, line)
            elif not allow_missing_reports:
                raise DatalistSourceError(path, "blank report (pass allow_missing_reports to accept)", [line])
        if set_names:
            item["labels"] = labels_to_json(noisy[index])
        if clean is not None:
            item["label"] = labels_to_json(clean[index])
        splits[split].append(item)

    if not allow_empty_splits:
        require_splits(splits, SPLITS if "split" in frame.columns else (default_key,), path)
    return Datalist(list(order), set_names, splits, ExclusionLog())


def _parse(cell: str, path: Path, column: str, index: int, allowed: Sequence[float]) -> float:
    try:
        return parse_label_value(cell, allowed)
    except ValueError as error:
        raise DatalistSourceError(path, f"column {column!r}: {error}", [csv_line(index)]) from None
