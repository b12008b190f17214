"""A tiny synthetic MIMIC-CXR(-JPG) tree: images, the four CSVs and reports.

The tests build their bundle runs on it, and ``make demo-bundle`` shows the bundle's workflow on it.
Its images are drawn, not radiographs, so any number measured on it is meaningless.

The images carry signal for two findings so that a short training run can learn something:
a bright disc in the middle when CheXpert says Cardiomegaly = 1, and a bright band at the bottom
when CheXpert says Pleural Effusion = 1. Everything is seeded and made from nothing real: ids
are invented, reports are template sentences with ``___`` de-identification tokens.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from l2v_monai.findings import CHEXPERT_FINDINGS

CARDIOMEGALY = CHEXPERT_FINDINGS.index("Cardiomegaly")
EFFUSION = CHEXPERT_FINDINGS.index("Pleural Effusion")
LUNG_OPACITY = CHEXPERT_FINDINGS.index("Lung Opacity")
# Per study: two frontal images cycling through PA/AP, then one lateral.
VIEW_CYCLE = (("PA", "LATERAL"), ("AP", "LATERAL"), ("PA", "AP", "LATERAL"))
# Raw values as written in the real CSVs; "" is blank (not mentioned).
CELL = {1.0: "1.0", 0.0: "0.0", -1.0: "-1.0", math.nan: ""}


def _cell(value: float) -> str:
    return "" if math.isnan(value) else CELL[value]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    if path.suffix == ".gz":
        # mtime=0: identical bytes on every run.
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as stream:
            stream.write(data)
    else:
        path.write_bytes(data)


def _random_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Raw label rows with every value kind: 1, 0, -1, NaN (blank)."""
    choices = np.array([1.0, 0.0, -1.0, math.nan])
    return rng.choice(choices, size=(n, len(CHEXPERT_FINDINGS)), p=[0.3, 0.3, 0.15, 0.25])


def _image_pixels(rng: np.random.Generator, size: int, cardiomegaly: bool, effusion: bool) -> np.ndarray:
    """A float image in [0, 1]: noisy background, a disc (radius grows with cardiomegaly), a bottom band."""
    yy, xx = np.mgrid[0:size, 0:size]
    pixels = 0.25 + 0.1 * rng.standard_normal((size, size))
    radius = size * (0.3 if cardiomegaly else 0.12)
    pixels[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2] += 0.45
    if effusion:
        pixels[int(size * 0.8) :, :] += 0.4
    return np.clip(pixels, 0.0, 1.0)


def _write_jpeg(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(path, quality=95)


def _write_dicom(path: Path, pixels: np.ndarray, uid_suffix: int) -> None:
    """A minimal 16-bit MONOCHROME2 DX file with file meta, readable by ``pydicom.dcmread``."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - Presentation
    # A fixed entropy source keeps the UIDs (hence the file bytes) identical between runs.
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"l2v-monai-test-{uid_suffix}"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.PatientID = "SYNTHETIC"
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.BitsAllocated = 16
    dataset.BitsStored = 12
    dataset.HighBit = 11
    dataset.PixelRepresentation = 0
    dataset.PixelData = np.round(pixels * 4095).astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)


def _report_text(study_index: int, labels: np.ndarray) -> str:
    """A MIMIC-style report: header block, FINDINGS and IMPRESSION sections, ``___`` tokens."""
    positives = [CHEXPERT_FINDINGS[i].lower() for i in np.flatnonzero(labels == 1.0)]
    impression = ", ".join(positives) if positives else "no acute cardiopulmonary process"
    return (
        "                                 FINAL REPORT\n"
        f" EXAMINATION:  CHEST (PA AND LAT)\n\n"
        f" INDICATION:  ___ year old with cough, study {study_index}.\n\n"
        " COMPARISON:  ___.\n\n"
        " FINDINGS: \n\n"
        f" Synthetic findings paragraph {study_index}. Heart size is described by\n"
        " template only.  Dr. ___ was notified.\n\n"
        " IMPRESSION: \n\n"
        f" {impression.capitalize()}.\n"
    )


def make_mimic_tree(
    root: Path,
    n_subjects: int = 4,
    studies_per_subject: int = 2,
    image_format: str = "jpg",
    size: int = 64,
    seed: int = 0,
    compress_csvs: bool = True,
) -> dict[str, Any]:
    """Write a small MIMIC-CXR(-JPG) layout under ``root`` and describe it.

    Subjects are split like MIMIC (by subject): the last ~20% (at least one) to test, the ~20%
    before them (at least one) to validate, the rest to train; ``n_subjects`` must be at least 3.
    Studies cycle through view sets PA+LATERAL, AP+LATERAL, PA+AP+LATERAL. The CheXpert and NegBio
    CSVs hold every value kind; the NegBio CSV names Lung Opacity "Airspace Opacity" and differs
    from CheXpert in a few random cells (a second, noisier labeler). ``image_format`` is ``"jpg"``,
    ``"dcm"`` or ``"both"``.

    Returns the paths (``root``, ``chexpert_csv``, ``negbio_csv``, ``metadata_csv``, ``split_csv``)
    and the facts tests check against: ``study_ids``, ``subject_of_study``, ``chexpert`` /
    ``negbio`` (study_id → raw 14-value array, NaN = blank), ``images`` (one dict per image with
    dicom_id, study_id, subject_id, view, split, path(s)), ``n_images``, ``n_frontal``, and
    ``frontal_per_split`` (datalist split key → count).
    """
    if n_subjects < 3:
        raise ValueError(f"n_subjects must be >= 3 so that train, validate and test are non-empty, got {n_subjects}")
    if image_format not in ("jpg", "dcm", "both"):
        raise ValueError(f"image_format must be 'jpg', 'dcm' or 'both', got {image_format!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".csv.gz" if compress_csvs else ".csv"
    formats = ("jpg", "dcm") if image_format == "both" else (image_format,)

    n_test = max(1, round(0.2 * n_subjects))
    n_val = max(1, round(0.2 * n_subjects))
    subject_split = ["train"] * (n_subjects - n_test - n_val) + ["validate"] * n_val + ["test"] * n_test
    split_key = {"train": "training", "validate": "validation", "test": "test"}

    n_studies = n_subjects * studies_per_subject
    chexpert = _random_labels(rng, n_studies)
    # Make sure every value kind occurs in every finding column's file at least once.
    chexpert[0, :4] = [1.0, 0.0, -1.0, math.nan]
    chexpert[0, CARDIOMEGALY] = 1.0
    negbio = chexpert.copy()
    flips = rng.random(negbio.shape) < 0.15
    negbio[flips] = _random_labels(rng, n_studies)[flips]
    negbio[0, :4] = [math.nan, -1.0, 0.0, 1.0]
    # The labelers disagree on Lung Opacity somewhere, so a mis-mapped "Airspace Opacity" shows.
    negbio[0, LUNG_OPACITY] = 0.0 if chexpert[0, LUNG_OPACITY] == 1.0 else 1.0

    label_rows_che, label_rows_neg, metadata_rows, split_rows = [], [], [], []
    images: list[dict[str, Any]] = []
    study_ids: list[str] = []
    subject_of_study: dict[str, str] = {}
    che_by_study: dict[str, np.ndarray] = {}
    neg_by_study: dict[str, np.ndarray] = {}
    study_index = 0
    for subject_index in range(n_subjects):
        subject_id = str(10_000_000 + 137 * subject_index + 11)
        for _ in range(studies_per_subject):
            study_id = str(50_000_000 + 7919 * study_index + 3)
            study_ids.append(study_id)
            subject_of_study[study_id] = subject_id
            che_by_study[study_id] = chexpert[study_index]
            neg_by_study[study_id] = negbio[study_index]
            label_rows_che.append([subject_id, study_id, *(_cell(v) for v in chexpert[study_index])])
            label_rows_neg.append([subject_id, study_id, *(_cell(v) for v in negbio[study_index])])
            folder = root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"
            folder.mkdir(parents=True, exist_ok=True)
            folder.with_name(f"s{study_id}.txt").write_text(_report_text(study_index, chexpert[study_index]))
            for view_index, view in enumerate(VIEW_CYCLE[study_index % len(VIEW_CYCLE)]):
                dicom_id = f"{study_index:04d}{view_index:02d}aa-1bb2cc3d-4ee5ff60-7a8b9c0d-e1f2a3b4"
                pixels = _image_pixels(
                    rng, size, chexpert[study_index, CARDIOMEGALY] == 1.0, chexpert[study_index, EFFUSION] == 1.0
                )
                paths = {}
                for fmt in formats:
                    path = folder / f"{dicom_id}.{fmt}"
                    if fmt == "jpg":
                        _write_jpeg(path, pixels)
                    else:
                        _write_dicom(path, pixels, uid_suffix=study_index * 10 + view_index)
                    paths[fmt] = path
                split = subject_split[subject_index]
                metadata_rows.append([dicom_id, subject_id, study_id, "CHEST (PA AND LAT)", view, str(size), str(size)])
                split_rows.append([dicom_id, study_id, subject_id, split])
                images.append(
                    {
                        "dicom_id": dicom_id,
                        "study_id": study_id,
                        "subject_id": subject_id,
                        "view": view,
                        "split": split_key[split],
                        "paths": paths,
                    }
                )
            study_index += 1

    findings = list(CHEXPERT_FINDINGS)
    negbio_findings = ["Airspace Opacity" if name == "Lung Opacity" else name for name in findings]
    paths = {
        "chexpert_csv": root / f"mimic-cxr-2.0.0-chexpert{suffix}",
        "negbio_csv": root / f"mimic-cxr-2.0.0-negbio{suffix}",
        "metadata_csv": root / f"mimic-cxr-2.0.0-metadata{suffix}",
        "split_csv": root / f"mimic-cxr-2.0.0-split{suffix}",
    }
    _write_csv(paths["chexpert_csv"], ["subject_id", "study_id", *findings], label_rows_che)
    _write_csv(paths["negbio_csv"], ["subject_id", "study_id", *negbio_findings], label_rows_neg)
    _write_csv(
        paths["metadata_csv"],
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns"],
        metadata_rows,
    )
    _write_csv(paths["split_csv"], ["dicom_id", "study_id", "subject_id", "split"], split_rows)

    frontal = [image for image in images if image["view"] in ("PA", "AP")]
    return {
        "root": root,
        **paths,
        "study_ids": study_ids,
        "subject_of_study": subject_of_study,
        "chexpert": che_by_study,
        "negbio": neg_by_study,
        "images": images,
        "n_subjects": n_subjects,
        "n_studies": n_studies,
        "n_images": len(images),
        "n_frontal": len(frontal),
        "frontal_per_split": {
            key: sum(image["split"] == key for image in frontal) for key in ("training", "validation", "test")
        },
    }
