"""MIMIC-CXR(-JPG) from its standard files to a datalist with several noisy label sets.

Inputs, all read by column name:

* ``mimic-cxr-2.0.0-chexpert.csv(.gz)`` and ``mimic-cxr-2.0.0-negbio.csv(.gz)``: one row per study,
  ``subject_id, study_id`` and the 14 findings with 1.0 (positive), 0.0 (negative), -1.0
  (uncertain) or blank (not mentioned). NegBio's "Airspace Opacity" is CheXpert's "Lung Opacity".
* ``mimic-cxr-2.0.0-metadata.csv(.gz)``: one row per image, ``dicom_id, subject_id, study_id,
  ViewPosition``.
* ``mimic-cxr-2.0.0-split.csv(.gz)``: ``dicom_id, study_id, subject_id, split`` with
  train / validate / test.
* Images at ``files/p<2 digits>/p<subject>/s<study>/<dicom_id>.jpg`` (or ``.dcm``) and reports at
  ``files/p<2 digits>/p<subject>/s<study>.txt``.

A label set is one labeler with one policy for uncertain labels, named ``<labeler>_u<policy>``:
``neg_u0`` is NegBio with uncertain → 0, ``che_u1`` CheXpert with uncertain → 1, ``che_umissing``
CheXpert with uncertain → missing. Blank (not mentioned) becomes 0 by default, the usual CheXpert
convention, or missing (``blank=nan``). A study absent from one labeler's CSV keeps its image, with
that labeler's sets entirely missing.

Also here: ``build_hand_labelled_datalist`` for a MIMIC-style hand-labelled test CSV (the paper's
"MIMIC-CXR 1K" set): clean 0/1 labels per image in a ``label`` vector.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.data.datalist import (
    NEGATIVE,
    POSITIVE,
    SPLITS,
    Datalist,
    DatalistSourceError,
    ExclusionLog,
    csv_line,
    labels_to_json,
    normalise_split,
    parse_label_value,
    raise_on_duplicates,
    read_csv_table,
    require_splits,
)
from l2v_monai.findings import CHEXPERT_FINDINGS
from l2v_monai.data.report_text import read_report_file

LABELERS: dict[str, str] = {"neg": "negbio", "negbio": "negbio", "che": "chexpert", "chexpert": "chexpert"}
DEFAULT_LABEL_SETS: tuple[str, ...] = ("neg_u0", "neg_u1", "che_u0", "che_u1")
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")
IMAGE_FORMATS: tuple[str, ...] = ("jpg", "dcm")
# NegBio's output names Lung Opacity by its older CheXpert name.
MIMIC_FINDING_ALIASES: dict[str, str] = {"Airspace Opacity": "Lung Opacity"}
STANDARD_FILE_STEMS: dict[str, str] = {
    "chexpert": "mimic-cxr-2.0.0-chexpert",
    "negbio": "mimic-cxr-2.0.0-negbio",
    "metadata": "mimic-cxr-2.0.0-metadata",
    "split": "mimic-cxr-2.0.0-split",
}
_LABEL_SET_NAME = re.compile(r"^(neg|negbio|che|chexpert)_u(0|1|missing)$")
# Fast path for the cell spellings found in the real files; anything else goes through
# parse_label_value, which either accepts it or produces the error message.
_KNOWN_CELLS: dict[str, float] = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0, "": math.nan}


@dataclass(frozen=True)
class LabelSetSpec:
    """One noisy label set: which labeler, and what its uncertain (-1) labels become."""

    name: str
    labeler: str
    uncertain: float

    @classmethod
    def parse(cls, name: str) -> LabelSetSpec:
        """``"che_u1"`` → CheXpert, uncertain → 1; also ``neg_u0`` and ``<labeler>_umissing``."""
        match = _LABEL_SET_NAME.match(name)
        if match is None:
            raise ValueError(
                f"label set name {name!r} is not <labeler>_u<policy> with labeler neg/che and policy 0/1/missing "
                "(e.g. neg_u0, che_u1, che_umissing)"
            )
        policy = match.group(2)
        uncertain = math.nan if policy == "missing" else float(policy)
        return cls(name, LABELERS[match.group(1)], uncertain)


@dataclass(frozen=True)
class MimicFiles:
    """Where the MIMIC-CXR files are: the four CSVs, the image root and the report root.

    ``image_root`` and ``report_root`` are the folders that hold ``files/``.
    """

    chexpert_csv: Path
    negbio_csv: Path
    metadata_csv: Path
    split_csv: Path
    image_root: Path
    report_root: Path

    @classmethod
    def find(cls, root: str | Path, report_root: str | Path | None = None, **overrides: str | Path) -> MimicFiles:
        """Locate the standard file names (``.csv`` or ``.csv.gz``) in ``root``; ``overrides`` name files directly.

        Override keys: ``chexpert_csv``, ``negbio_csv``, ``metadata_csv``, ``split_csv``. Raises
        ``FileNotFoundError`` listing every file that is missing.
        """
        root = Path(root)
        found: dict[str, Path] = {}
        missing: list[str] = []
        for key, stem in STANDARD_FILE_STEMS.items():
            field_name = f"{key}_csv"
            if overrides.get(field_name) is not None:
                candidates = [Path(overrides.pop(field_name))]
            else:
                candidates = [root / f"{stem}.csv", root / f"{stem}.csv.gz"]
            existing = [path for path in candidates if path.is_file()]
            if existing:
                found[field_name] = existing[0]
            else:
                missing.append(" or ".join(str(path) for path in candidates))
        unknown = sorted(key for key, value in overrides.items() if value is not None)
        if unknown:
            raise TypeError(f"unknown MIMIC file override(s) {unknown}")
        if missing:
            raise FileNotFoundError("MIMIC-CXR file(s) not found: " + "; ".join(missing))
        return cls(image_root=root, report_root=Path(report_root) if report_root is not None else root, **found)


@dataclass(frozen=True)
class StudyLabels:
    """One row of a labeler CSV: raw values (1, 0, -1, NaN for blank) and where it came from."""

    line: int
    subject_id: str
    values: np.ndarray


def study_folder(root: str | Path, subject_id: str, study_id: str) -> Path:
    """``<root>/files/p<first 2 digits>/p<subject>/s<study>``, MIMIC-CXR's layout."""
    return Path(root) / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def mimic_image_path(
    root: str | Path, subject_id: str, study_id: str, dicom_id: str, image_format: str = "jpg"
) -> Path:
    """Path of one MIMIC image (``.jpg`` in MIMIC-CXR-JPG, ``.dcm`` in MIMIC-CXR)."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    return study_folder(root, subject_id, study_id) / f"{dicom_id}.{image_format}"


def mimic_report_path(root: str | Path, subject_id: str, study_id: str) -> Path:
    """Path of one MIMIC report: ``files/p1X/p<subject>/s<study>.txt``."""
    folder = study_folder(root, subject_id, study_id)
    return folder.with_name(f"{folder.name}.txt")


def _parse_label_column(path: Path, column: str, cells: Sequence[str], allowed: Sequence[float]) -> np.ndarray:
    """Parse one finding column; the first bad cell raises naming the file, line and column."""
    values = np.empty(len(cells), dtype=np.float64)
    for index, cell in enumerate(cells):
        value = _KNOWN_CELLS.get(cell)
        if value is None or (not math.isnan(value) and value not in allowed):
            try:
                value = parse_label_value(cell, allowed)
            except ValueError as error:
                raise DatalistSourceError(path, f"column {column!r}: {error}", [csv_line(index)]) from None
        values[index] = value
    return values


def read_labeler_csv(path: str | Path, findings: Sequence[str] = CHEXPERT_FINDINGS) -> dict[str, StudyLabels]:
    """Read a CheXpert/NegBio label CSV → ``study_id`` → raw label row (1, 0, -1, NaN = blank).

    Columns are found by name (``Airspace Opacity`` counts as ``Lung Opacity``). Raises
    ``DatalistSourceError`` for a missing column, a value outside {1, 0, -1, blank}, or a
    duplicated study_id (naming the lines).
    """
    path = Path(path)
    frame = read_csv_table(path, ("subject_id", "study_id"), what="label CSV")
    try:
        frame = frame.renamed(MIMIC_FINDING_ALIASES)
    except ValueError as error:  # both a column and its alias, e.g. "Airspace Opacity" and "Lung Opacity"
        raise DatalistSourceError(path, str(error), [1]) from None
    missing = [name for name in findings if name not in frame.columns]
    if missing:
        raise DatalistSourceError(path, f"missing finding column(s) {missing}", [1])
    study_ids = frame["study_id"]
    raise_on_duplicates(path, "study_id", study_ids)
    _require_ids(path, "study_id", study_ids)
    columns = [_parse_label_column(path, name, frame[name], (1.0, 0.0, -1.0)) for name in findings]
    matrix = np.stack(columns, axis=1) if columns else np.empty((len(frame), 0))
    subjects = frame["subject_id"]
    return {
        study: StudyLabels(csv_line(index), subjects[index], matrix[index]) for index, study in enumerate(study_ids)
    }


def _require_ids(path: Path, column: str, values: Sequence[str]) -> None:
    blank = [csv_line(index) for index, value in enumerate(values) if not value]
    if blank:
        raise DatalistSourceError(path, f"blank {column}", blank)


def apply_label_policy(raw: np.ndarray, uncertain: float, blank: float) -> np.ndarray:
    """Raw CheXpert values → a label set: 1 and 0 kept, -1 → ``uncertain``, blank (NaN) → ``blank``."""
    out = np.array(raw, dtype=np.float64, copy=True)
    out[np.isnan(raw)] = blank
    out[raw == -1.0] = uncertain
    return out


def _check_blank_policy(blank: float) -> float:
    blank = float(blank)
    if not (math.isnan(blank) or blank == 0.0):
        raise ValueError(f"blank (not mentioned) must map to 0 or NaN (missing), got {blank}")
    return blank


def read_split_csv(path: str | Path) -> dict[str, tuple[str, int]]:
    """``dicom_id`` → (datalist split key, CSV line); unknown split names and duplicates raise."""
    path = Path(path)
    frame = read_csv_table(path, ("dicom_id", "split"), what="split CSV")
    dicom_ids = frame["dicom_id"]
    raise_on_duplicates(path, "dicom_id", dicom_ids)
    _require_ids(path, "dicom_id", dicom_ids)
    out: dict[str, tuple[str, int]] = {}
    for index, (dicom_id, raw) in enumerate(zip(dicom_ids, frame["split"])):
        split = normalise_split(raw)
        if split is None:
            raise DatalistSourceError(path, f"split {raw!r} is not one of train/validate/test", [csv_line(index)])
        out[dicom_id] = (split, csv_line(index))
    return out


def build_mimic_datalist(
    files: MimicFiles,
    label_sets: Sequence[str] = DEFAULT_LABEL_SETS,
    views: Iterable[str] | None = FRONTAL_VIEWS,
    blank: float = 0.0,
    include_reports: bool = True,
    image_format: str = "jpg",
    check_images: bool = True,
    missing_images: str = "error",
    strict: bool = False,
    allow_empty_splits: bool = False,
    findings: Sequence[str] = CHEXPERT_FINDINGS,
) -> Datalist:
    """Build the MIMIC datalist: one item per image of the chosen views, with ``M × N`` label sets.

    Args:
        files: the MIMIC files (``MimicFiles.find(root)``).
        label_sets: names ``<labeler>_u<0|1|missing>``, in the order of the ``labels`` rows.
        views: ViewPosition values kept (default PA and AP); ``None`` keeps every view.
        blank: what a blank (not mentioned) label becomes: 0 (default) or NaN (missing).
        include_reports: read each study's report and store its cleaned text under ``report``.
        image_format: ``"jpg"`` (MIMIC-CXR-JPG) or ``"dcm"`` (MIMIC-CXR).
        check_images: check that every image file exists.
        missing_images: ``"error"`` (default) raises naming the metadata line and path; ``"exclude"``
            lists the image in the exclusions instead.
        strict: a study in a label CSV without any image in the metadata raises instead of being
            listed as an exclusion.
        allow_empty_splits: accept a split with no item instead of raising ``EmptySplitError``.
        findings: the finding columns read from the label CSVs, in output order.

    Rows left out (other views, images missing from the split file, studies with no label row,
    label rows with no image) are listed in ``Datalist.exclusions``.
    """
    specs = [LabelSetSpec.parse(name) for name in label_sets]
    if not specs:
        raise ValueError("at least one label set is needed")
    blank = _check_blank_policy(blank)
    if missing_images not in ("error", "exclude"):
        raise ValueError(f"missing_images must be 'error' or 'exclude', got {missing_images!r}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    kept_views = None if views is None else {view.strip().upper() for view in views}
    exclusions = ExclusionLog()

    labelers = sorted({spec.labeler for spec in specs})
    label_files = {"chexpert": files.chexpert_csv, "negbio": files.negbio_csv}
    labels = {labeler: read_labeler_csv(label_files[labeler], findings) for labeler in labelers}
    split_of = read_split_csv(files.split_csv)

    metadata = read_csv_table(
        files.metadata_csv, ("dicom_id", "subject_id", "study_id", "ViewPosition"), "metadata CSV"
    )
    dicom_ids = metadata["dicom_id"]
    raise_on_duplicates(files.metadata_csv, "dicom_id", dicom_ids)
    _require_ids(files.metadata_csv, "dicom_id", dicom_ids)
    _require_ids(files.metadata_csv, "study_id", metadata["study_id"])
    _require_ids(files.metadata_csv, "subject_id", metadata["subject_id"])

    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    reports: dict[str, str] = {}
    studies_with_images: set[str] = set()
    rows = zip(
        dicom_ids, metadata["subject_id"], metadata["study_id"], metadata["ViewPosition"]
    )
    for index, (dicom_id, subject_id, study_id, view) in enumerate(rows):
        line = csv_line(index)
        studies_with_images.add(study_id)
        for labeler in labelers:
            row = labels[labeler].get(study_id)
            if row is not None and row.subject_id != subject_id:
                raise DatalistSourceError(
                    files.metadata_csv,
                    f"study_id {study_id} has another subject_id in {label_files[labeler]} (line {row.line})",
                    [line],
                )
        if kept_views is not None and view.upper() not in kept_views:
            exclusions.add(
                f"view {view or '(blank)'} not in {'/'.join(sorted(kept_views))}", files.metadata_csv, line, dicom_id
            )
            continue
        if dicom_id not in split_of:
            exclusions.add("dicom_id not in the split CSV", files.metadata_csv, line, dicom_id)
            continue
        rows_by_labeler = {labeler: labels[labeler].get(study_id) for labeler in labelers}
        if all(row is None for row in rows_by_labeler.values()):
            exclusions.add("study has no row in any label CSV", files.metadata_csv, line, dicom_id)
            continue
        image = mimic_image_path(files.image_root, subject_id, study_id, dicom_id, image_format)
        if check_images and not image.is_file():
            if missing_images == "error":
                raise DatalistSourceError(
                    files.metadata_csv, f"image file missing for dicom_id {dicom_id}: {image}", [line]
                )
            exclusions.add("image file missing", files.metadata_csv, line, dicom_id)
            continue
        matrix = np.full((len(specs), len(findings)), math.nan)
        for row_index, spec in enumerate(specs):
            row = rows_by_labeler[spec.labeler]
            if row is not None:
                matrix[row_index] = apply_label_policy(row.values, spec.uncertain, blank)
        item: dict[str, Any] = {
            "image": str(image),
            "study_id": study_id,
            "subject_id": subject_id,
            "dicom_id": dicom_id,
            "view": view,
            "labels": labels_to_json(matrix),
        }
        if include_reports:
            if study_id not in reports:
                reports[study_id] = read_report_file(mimic_report_path(files.report_root, subject_id, study_id))
            item["report"] = reports[study_id]
        splits[split_of[dicom_id][0]].append(item)

    for labeler in labelers:
        orphans = [(study, row) for study, row in labels[labeler].items() if study not in studies_with_images]
        if orphans and strict:
            raise DatalistSourceError(
                label_files[labeler],
                f"{len(orphans)} stud{'y has' if len(orphans) == 1 else 'ies have'} no image in {files.metadata_csv} "
                f"(first study_id {orphans[0][0]})",
                [row.line for _, row in orphans],
            )
        for study, row in orphans:
            exclusions.add(
                f"study in the {labeler} CSV has no image in the metadata", label_files[labeler], row.line, study
            )

    if not allow_empty_splits:
        require_splits(splits, SPLITS, "MIMIC-CXR datalist")
    return Datalist(list(findings), [spec.name for spec in specs], splits, exclusions)


# Item metadata a hand-label CSV may carry beside its findings (the patient, and subgroups to report).
HAND_METADATA_COLUMNS = ("subject_id", "patient_id", "view", "sex", "age_band", "site", "scanner")


def build_hand_labelled_datalist(
    csv_path: str | Path,
    findings: Sequence[str] = CHEXPERT_FINDINGS,
    image_root: str | Path | None = None,
    metadata_csv: str | Path | None = None,
    image_format: str = "jpg",
    check_images: bool = True,
) -> Datalist:
    """A hand-labelled test CSV → a datalist whose ``test`` items carry a clean ``label`` (N, null = unlabelled).

    The CSV has an ``image`` column (a path, relative to the CSV's folder or absolute) or a
    ``dicom_id`` column, located through ``metadata_csv`` (for subject and study) under
    ``image_root`` in the MIMIC layout. The finding columns hold 1, 0 or blank; anything else, a
    duplicated image or dicom_id, or a missing image file raises naming the line.

    What the sources say about the item is kept for the evaluation's patient-level bootstrap and
    subgroups: ``subject_id`` and ``view`` (``ViewPosition``) from the metadata CSV, and any of
    the CSV's own ``HAND_METADATA_COLUMNS`` (blank cells are left out).
    """
    csv_path = Path(csv_path)
    frame = read_csv_table(csv_path, (), what="hand-label CSV")
    if "image" not in frame.columns and "dicom_id" not in frame.columns:
        raise DatalistSourceError(csv_path, "needs an 'image' or a 'dicom_id' column", [1])
    missing = [name for name in findings if name not in frame.columns]
    if missing:
        raise DatalistSourceError(csv_path, f"missing finding column(s) {missing}", [1])
    key = "image" if "image" in frame.columns else "dicom_id"
    keys = frame[key]
    _require_ids(csv_path, key, keys)
    raise_on_duplicates(csv_path, key, keys)
    columns = [_parse_label_column(csv_path, name, frame[name], (POSITIVE, NEGATIVE)) for name in findings]
    matrix = np.stack(columns, axis=1)

    located: dict[str, tuple[str, str]] = {}
    if key == "dicom_id":
        if image_root is None or metadata_csv is None:
            raise ValueError(f"{csv_path}: a dicom_id column needs image_root and metadata_csv to find the images")
        metadata = read_csv_table(metadata_csv, ("dicom_id", "subject_id", "study_id"), "metadata CSV")
        raise_on_duplicates(metadata_csv, "dicom_id", metadata["dicom_id"])
        views = metadata["ViewPosition"] if "ViewPosition" in metadata.columns else [""] * len(metadata)
        located = {
            dicom: (subject, study, view)
            for dicom, subject, study, view in zip(metadata["dicom_id"], metadata["subject_id"], metadata["study_id"], views)
        }

    items = []
    for index, ident in enumerate(keys):
        line = csv_line(index)
        item: dict[str, Any] = {}
        if key == "image":
            image = Path(ident) if Path(ident).is_absolute() else csv_path.parent / ident
        else:
            if ident not in located:
                raise DatalistSourceError(csv_path, f"dicom_id {ident} is not in {metadata_csv}", [line])
            subject_id, study_id, view = located[ident]
            image = mimic_image_path(image_root, subject_id, study_id, ident, image_format)  # type: ignore[arg-type]
            item.update(study_id=study_id, dicom_id=ident, subject_id=subject_id)
            if view:
                item["view"] = view
        if check_images and not image.is_file():
            raise DatalistSourceError(csv_path, f"image file missing: {image}", [line])
        item["image"] = str(image)
        for column in HAND_METADATA_COLUMNS:
            if column in frame.columns and frame[column][index]:
                item[column] = frame[column][index]
        item["label"] = labels_to_json(matrix[index])
        items.append(item)
    if not items:
        raise DatalistSourceError(csv_path, "holds no rows")
    return Datalist(list(findings), [], {"training": [], "validation": [], "test": items})
