"""Where reports to label come from, and the manifest CSV written from their label sets.

Three report sources (``read_report_source``), each giving ``LabeledReport`` s with cleaned text:

* a **CSV** with columns ``id`` and ``report`` (the report text), optionally ``image``;
* a **folder of ``.txt`` files**, one report each, ``id`` = the file name without ``.txt``;
* the **OpenI archive** ``NLMCXR_reports.tgz``, ``id`` = the report's ``uId``, one image per
  ``parentImage``.

CSV and ``.txt`` reports keep FINDINGS and IMPRESSION when they have MIMIC-style headers, else the
whole text (``clean_mimic_report(fallback="full")``, as ``l2v_monai.data.manifest`` does). A report
that is empty after cleaning, or cannot be read, raises ``ReportSourceError`` naming its id, unless
``allow_empty``: then its labels are written blank (missing), never dropped. Errors never quote
report text.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2v_monai.data.datalist import csv_line, read_csv_table
from l2v_monai.findings import CHEXPERT_FINDINGS
from l2v_monai.data.report_text import clean_mimic_report

REPORT_SUFFIX = ".txt"
OPENI_SUFFIXES = (".tgz", ".tar.gz", ".tar")


class ReportSourceError(ValueError):
    """A report source that cannot be labeled as given; the message names the file and report ids."""


@dataclass(frozen=True)
class LabeledReport:
    """One report to label: its id, cleaned text (never logged), and its image path or image ids."""

    report_id: str
    text: str
    image_ids: tuple[str, ...] = ()
    image_path: str = ""


def _shown(ids: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def read_csv_reports(path: str | Path) -> list[LabeledReport]:
    """``id,report[,image]`` CSV → reports; blank or repeated ids raise naming the lines."""
    path = Path(path)
    frame = read_csv_table(path, ("id", "report"), what="report CSV")
    ids = frame["id"]
    blank = [str(csv_line(index)) for index, value in enumerate(ids) if not value]
    if blank:
        raise ReportSourceError(f"{path}: blank id on line(s) {_shown(blank)}")
    seen: dict[str, int] = {}
    repeated = []
    for index, value in enumerate(ids):
        if value in seen:
            repeated.append(f"{value} (lines {seen[value]} and {csv_line(index)})")
        seen.setdefault(value, csv_line(index))
    if repeated:
        raise ReportSourceError(f"{path}: repeated id(s) {_shown(repeated)}")
    images = frame["image"] if "image" in frame.columns else [""] * len(ids)
    return [
        LabeledReport(report_id, clean_mimic_report(text, fallback="full"), image_path=image)
        for report_id, text, image in zip(ids, frame["report"], images)
    ]


def read_folder_reports(folder: str | Path) -> list[LabeledReport]:
    """Every ``*.txt`` in ``folder`` (sorted) → reports; a file that is not UTF-8 raises naming its id."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(REPORT_SUFFIX))
    if not files:
        raise ReportSourceError(f"{folder}: holds no {REPORT_SUFFIX} report file")
    reports = []
    for file in files:
        report_id = file.name[: -len(REPORT_SUFFIX)]
        try:
            raw = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ReportSourceError(
                f"report {report_id!r} ({file}) is not UTF-8 text (byte {error.start}); save it as UTF-8"
            ) from None
        except OSError as error:
            raise ReportSourceError(f"report {report_id!r} ({file}) cannot be read ({type(error).__name__})") from None
        reports.append(LabeledReport(report_id, clean_mimic_report(raw, fallback="full")))
    return reports


def read_openi_archive(archive: str | Path) -> list[LabeledReport]:
    """``NLMCXR_reports.tgz`` → reports (FINDINGS + IMPRESSION), with their ``parentImage`` ids."""
    from l2v_monai.data.openi import read_openi_reports

    return [
        LabeledReport(report.uid, report.text, image_ids=report.image_ids)
        for report in read_openi_reports(archive)
    ]


def read_report_source(source: str | Path) -> list[LabeledReport]:
    """A CSV file, a folder of ``.txt`` files or the OpenI archive → reports (see the module docstring)."""
    source = Path(source)
    if source.is_dir():
        return read_folder_reports(source)
    if not source.is_file():
        raise FileNotFoundError(f"report source not found: {source}")
    name = source.name.lower()
    if name.endswith(OPENI_SUFFIXES):
        return read_openi_archive(source)
    if name.endswith((".csv", ".csv.gz")):
        return read_csv_reports(source)
    raise ReportSourceError(f"{source}: not a .csv, a folder of .txt files or the OpenI .tgz archive")


def check_not_empty(reports: Sequence[LabeledReport], source: str | Path, allow_empty: bool) -> list[int]:
    """Indices of reports with no text left; raises naming their ids unless ``allow_empty``."""
    empty = [index for index, report in enumerate(reports) if not report.text.strip()]
    if empty and not allow_empty:
        ids = [reports[index].report_id for index in empty]
        raise ReportSourceError(
            f"{source}: {len(ids)} report(s) have no text (no FINDINGS/IMPRESSION or an empty file): "
            f"{_shown(ids)}; pass --allow-empty to write them with blank (missing) labels"
        )
    return empty


def manifest_rows(
    reports: Sequence[LabeledReport],
    labels: np.ndarray,
    set_names: Sequence[str],
    image_template: str = "{id}.png",
    blank_rows: Sequence[int] = (),
    findings: Sequence[str] = CHEXPERT_FINDINGS,
) -> tuple[list[str], list[list[str]]]:
    """Reports + ``labels`` (R × K × N) → manifest header and rows (labels as ``1`` / ``0``).

    A report with an ``image_path`` (the CSV's ``image`` column) gets one row with it; one with
    ``image_ids`` (OpenI) one row per image, ``image_template`` formatted with ``id`` = the image id
    and ``study`` = the report id; any other report one row with the template formatted by its own
    id. Every report gets at least one row. Reports in ``blank_rows`` get blank labels.
    """
    if labels.shape != (len(reports), len(set_names), len(findings)):
        raise ValueError(f"labels shape {labels.shape} does not match {len(reports)} reports")
    header = ["image", "study_id"] + [f"{name}/{finding}" for name in set_names for finding in findings]
    blank = set(blank_rows)
    rows: list[list[str]] = []
    for index, report in enumerate(reports):
        cells = [
            "" if index in blank or math.isnan(value) else str(int(value))
            for value in labels[index].reshape(-1).tolist()
        ]
        if report.image_path:
            paths = [report.image_path]
        else:
            paths = [image_template.format(id=image, study=report.report_id)
                     for image in report.image_ids or (report.report_id,)]
        rows.extend([path, report.report_id, *cells] for path in paths)
    return header, rows


def write_manifest(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    """Write the manifest CSV (UTF-8, comma-separated); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
