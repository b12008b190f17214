"""OpenI: MeSH major tags → the 14 findings, label semantics, datalist, counts on the real archive."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from l2v_monai.data.datalist import DatalistSourceError
from l2v_monai.data.openi import (
    MissingImagesError,
    build_openi_datalist,
    map_mesh_tag,
    openi_label_counts,
    openi_labels,
    read_openi_reports,
)
from l2v_monai.findings import CHEXPERT_FINDINGS
from l2v_monai.data.report_text import DEID_TOKEN

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ARCHIVE = SHARED / "data" / "openi-reports" / "NLMCXR_reports.tgz"
F = {name: index for index, name in enumerate(CHEXPERT_FINDINGS)}

# Measured on the real archive (3,955 reports) with:
#   python scripts/prepare_openi.py --archive ../shared/data/openi-reports/NLMCXR_reports.tgz --image-root x
REAL_COUNTS = {  # finding: (positive, negative, unlabelled) reports
    "Atelectasis": (332, 1391, 2232),
    "Cardiomegaly": (395, 1391, 2169),
    "Consolidation": (30, 1391, 2534),
    "Edema": (101, 1391, 2463),
    "Enlarged Cardiomediastinum": (27, 1391, 2537),
    "Fracture": (84, 1391, 2480),
    "Lung Lesion": (110, 1391, 2454),
    "Lung Opacity": (583, 1391, 1981),
    "No Finding": (1391, 2463, 101),
    "Pleural Effusion": (201, 1391, 2363),
    "Pleural Other": (58, 1391, 2506),
    "Pneumonia": (42, 1391, 2522),
    "Pneumothorax": (27, 1391, 2537),
    "Support Devices": (379, 1391, 2185),
}


@pytest.mark.parametrize(
    ("tag", "findings"),
    [
        ("Pulmonary Atelectasis/base/left", ("Atelectasis",)),
        ("Cardiomegaly/mild", ("Cardiomegaly",)),
        ("Cardiac Shadow/enlarged/mild", ("Cardiomegaly",)),
        ("Opacity/lung/base/left/mild", ("Lung Opacity",)),
        ("Opacity/ribs/right", ()),
        ("Airspace Disease/lung/bilateral", ("Lung Opacity",)),
        ("Nodule/lung/upper lobe", ("Lung Lesion",)),
        ("Mass/breast", ()),
        ("Fractures, Bone/ribs/left", ("Fracture",)),
        ("Pulmonary  Edema", ("Edema",)),
        ("pulmonary congestion/mild", ("Edema",)),
        ("Hydropneumothorax/right", ("Pneumothorax", "Pleural Effusion")),
        ("Costophrenic Angle/right/blunted", ("Pleural Effusion",)),
        ("Thickening/pleura/apex", ("Pleural Other",)),
        ("Mediastinum/prominent", ("Enlarged Cardiomediastinum",)),
        ("Catheters, Indwelling", ("Support Devices",)),
        ("Implanted Medical Device/chest", ("Support Devices",)),
        ("Calcified Granuloma/lung", ()),
        ("Lung/hypoinflation", ()),
    ],
)
def test_map_mesh_tag(tag, findings):
    assert map_mesh_tag(tag) == findings


def test_label_semantics_normal_abnormal_and_unlabelled():
    normal = openi_labels(["normal"])
    assert normal[F["No Finding"]] == 1.0
    assert (np.delete(normal, F["No Finding"]) == 0.0).all()

    abnormal = openi_labels(["Cardiomegaly/mild", "Opacity/lung/base", "Spine/degenerative"])
    assert abnormal[F["Cardiomegaly"]] == 1.0 and abnormal[F["Lung Opacity"]] == 1.0
    assert abnormal[F["No Finding"]] == 0.0
    others = [i for name, i in F.items() if name not in ("Cardiomegaly", "Lung Opacity", "No Finding")]
    assert np.isnan(abnormal[others]).all()

    # An abnormal report whose tags map to no finding still says "not No Finding".
    unmapped = openi_labels(["Calcified Granuloma/lung"])
    assert unmapped[F["No Finding"]] == 0.0 and np.isnan(np.delete(unmapped, F["No Finding"])).all()

    for tags in ([], ["No Indexing"], ["Technical Quality of Image Unsatisfactory "]):
        assert np.isnan(openi_labels(tags)).all()

    with pytest.raises(ValueError, match=r"x\.xml: tagged 'normal' together with"):
        openi_labels(["normal", "Cardiomegaly"], where="x.xml")


def test_labels_follow_the_given_findings_order():
    labels = openi_labels(["Pneumothorax"], findings=("Pneumothorax", "No Finding", "Edema"))
    assert labels[0] == 1.0 and labels[1] == 0.0 and math.isnan(labels[2])


def _xml(uid: str, images: list[str], tags: list[str], findings: str = "Clear lungs XXXX.") -> bytes:
    majors = "".join(f"<major>{tag}</major>" for tag in tags)
    parents = "".join(f'<parentImage id="{image}"><figureId>F1</figureId></parentImage>' for image in images)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="{uid}"/><MedlineCitation><Article><Abstract>'
        '<AbstractText Label="COMPARISON">None.</AbstractText>'
        '<AbstractText Label="INDICATION">XXXX-year-old cough</AbstractText>'
        f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
        '<AbstractText Label="IMPRESSION">Normal.</AbstractText>'
        f"</Abstract></Article></MedlineCitation><MeSH>{majors}</MeSH>{parents}</eCitation>"
    ).encode()


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"ecgen-radiology/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def small_archive(tmp_path):
    return _archive(
        tmp_path / "reports.tgz",
        {
            "1.xml": _xml("CXR1", ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"], ["normal"]),
            "2.xml": _xml("CXR2", ["CXR2_IM-0652-1001"], ["Cardiomegaly/borderline", "Pulmonary Atelectasis/base"]),
            "3.xml": _xml("CXR3", [], ["Opacity/lung"]),
        },
    )


def test_datalist_one_item_per_image_with_report_labels(small_archive, tmp_path):
    images = tmp_path / "NLMCXR_png"
    images.mkdir()
    for name in ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001"):
        (images / f"{name}.png").write_bytes(b"")
    datalist = build_openi_datalist(small_archive, images)
    items = datalist.splits["test"]
    assert datalist.counts() == {"training": 0, "validation": 0, "test": 3}
    assert [item["study_id"] for item in items] == ["CXR1", "CXR1", "CXR2"]
    assert items[0]["label"][F["No Finding"]] == 1.0 and items[0]["label"] == items[1]["label"]
    assert items[2]["label"][F["Atelectasis"]] == 1.0 and items[2]["label"][F["No Finding"]] == 0.0
    assert items[2]["label"][F["Edema"]] is None
    assert items[0]["report"] == f"FINDINGS: Clear lungs {DEID_TOKEN}. IMPRESSION: Normal."
    assert datalist.exclusions.counts() == {"report has no parentImage": 1}
    assert datalist.exclusions.entries[0].ident == "ecgen-radiology/3.xml"


def test_missing_images_error_with_count_or_labels_only(small_archive, tmp_path):
    with pytest.raises(MissingImagesError, match=r"3 of 3 OpenI images are missing under .*png"):
        build_openi_datalist(small_archive, tmp_path / "png")
    labels_only = build_openi_datalist(
        small_archive, tmp_path / "png", allow_missing_images=True, include_reports=False
    )
    assert labels_only.splits["test"][0]["image"].endswith("png/CXR1_1_IM-0001-3001.png")
    assert "report" not in labels_only.splits["test"][0]


def test_bad_archives_name_the_member(tmp_path):
    broken = _archive(tmp_path / "a.tgz", {"9.xml": b"<eCitation><uId id='CXR9'/>"})
    with pytest.raises(DatalistSourceError, match=r"a\.tgz: member ecgen-radiology/9\.xml: not well-formed XML"):
        read_openi_reports(broken)
    duplicated = _archive(
        tmp_path / "b.tgz", {"1.xml": _xml("CXR1", ["IM-1"], ["normal"]), "2.xml": _xml("CXR2", ["IM-1"], ["normal"])}
    )
    with pytest.raises(DatalistSourceError, match=r"parentImage IM-1 appears in ecgen-radiology/1\.xml and .*2\.xml"):
        read_openi_reports(duplicated)
    (tmp_path / "c.tgz").write_bytes(b"not a tar")
    with pytest.raises(DatalistSourceError, match=r"c\.tgz: cannot be read as a tar archive"):
        read_openi_reports(tmp_path / "c.tgz")
    with pytest.raises(FileNotFoundError, match="OpenI report archive not found"):
        read_openi_reports(tmp_path / "none.tgz")


@pytest.fixture(scope="module")
def real_reports():
    if not ARCHIVE.is_file():
        pytest.skip(f"real OpenI archive not available at {ARCHIVE}")
    return read_openi_reports(ARCHIVE)


def test_real_archive_counts(real_reports):
    assert len(real_reports) == 3955
    assert sum(len(r.image_ids) for r in real_reports) == 7470
    counts = openi_label_counts(real_reports)
    assert {name: (c["positive"], c["negative"], c["unlabelled"]) for name, c in counts.items()} == REAL_COUNTS


def test_prepare_openi_script_prints_counts_and_writes_labels_only_datalist(real_reports, tmp_path):
    out = tmp_path / "openi.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare_openi.py"), "--archive", str(ARCHIVE),
         "--image-root", str(tmp_path / "png"), "--allow-missing-images", "--out", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "| Cardiomegaly | 395 | 1391 | 2169 |" in result.stdout
    assert "wrote" in result.stdout and "7470 test items" in result.stdout
    assert "104  report has no parentImage" in result.stdout
    assert out.is_file() and out.with_name("openi.exclusions.json").is_file()
