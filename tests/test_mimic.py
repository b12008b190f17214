"""MIMIC-CXR files → datalist, on the synthetic tree from ``mimic_tree.py``."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from l2v_monai.experiments.synthetic_mimic import make_mimic_tree

from l2v_monai.data.datalist import DatalistSourceError, EmptySplitError, exclusions_path, write_datalist
from l2v_monai.data.mimic import (
    LabelSetSpec,
    MimicFiles,
    apply_label_policy,
    build_hand_labelled_datalist,
    build_mimic_datalist,
    read_labeler_csv,
)
from l2v_monai.findings import CHEXPERT_FINDINGS
from l2v_monai.data.report_text import DEID_TOKEN

N = len(CHEXPERT_FINDINGS)
LUNG_OPACITY = CHEXPERT_FINDINGS.index("Lung Opacity")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_mimic_tree(tmp_path_factory.mktemp("mimic"))


@pytest.fixture()
def plain_tree(tmp_path):
    """A fresh tree with uncompressed CSVs, for tests that edit them."""
    return make_mimic_tree(tmp_path / "mimic", compress_csvs=False)


@pytest.fixture(scope="module")
def datalist(tree):
    return build_mimic_datalist(MimicFiles.find(tree["root"]))


def _items(datalist):
    return [item for split in datalist.splits.values() for item in split]


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as stream:
        return list(csv.reader(stream))


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as stream:
        csv.writer(stream, lineterminator="\n").writerows(rows)


def _expected(raw: np.ndarray, uncertain: float, blank: float) -> list:
    out = []
    for value in raw:
        value = blank if math.isnan(value) else uncertain if value == -1.0 else value
        out.append(None if math.isnan(value) else value)
    return out


# --- the default build -----------------------------------------------------------------------


def test_tree_is_small_fast_and_deterministic(tmp_path):
    start = time.perf_counter()
    first = make_mimic_tree(tmp_path / "a")
    elapsed = time.perf_counter() - start
    second = make_mimic_tree(tmp_path / "b")
    assert elapsed < 1.0
    for key in ("chexpert_csv", "negbio_csv", "metadata_csv", "split_csv"):
        assert first[key].read_bytes() == second[key].read_bytes()
    jpg = first["images"][0]["paths"]["jpg"]
    other = second["images"][0]["paths"]["jpg"]
    assert hashlib.sha256(jpg.read_bytes()).digest() == hashlib.sha256(other.read_bytes()).digest()
    assert all(count > 0 for count in first["frontal_per_split"].values())
    with pytest.raises(ValueError, match="n_subjects"):
        make_mimic_tree(tmp_path / "c", n_subjects=2)


def test_default_build_keeps_frontal_images_in_the_official_split(tree, datalist):
    assert datalist.label_sets == ["neg_u0", "neg_u1", "che_u0", "che_u1"]
    assert datalist.findings == list(CHEXPERT_FINDINGS)
    assert datalist.counts() == tree["frontal_per_split"]
    split_of = {image["dicom_id"]: image["split"] for image in tree["images"]}
    for split, items in datalist.splits.items():
        for item in items:
            assert split_of[item["dicom_id"]] == split
            assert item["view"] in ("PA", "AP")
            assert np.array(item["labels"], dtype=float).shape == (4, N)
            assert Path(item["image"]).is_file()
            assert item["image"].endswith(".jpg")
    # Every lateral is listed as an exclusion, with its reason; nothing else is left out.
    n_lateral = tree["n_images"] - tree["n_frontal"]
    assert datalist.exclusions.counts() == {"view LATERAL not in AP/PA": n_lateral}


def test_each_value_kind_maps_per_label_set(tree, datalist):
    seen = set()
    for item in _items(datalist):
        che = tree["chexpert"][item["study_id"]]
        neg = tree["negbio"][item["study_id"]]
        seen.update("blank" if math.isnan(v) else v for v in np.concatenate([che, neg]))
        assert item["labels"][0] == _expected(neg, 0.0, 0.0)
        assert item["labels"][1] == _expected(neg, 1.0, 0.0)
        assert item["labels"][2] == _expected(che, 0.0, 0.0)
        assert item["labels"][3] == _expected(che, 1.0, 0.0)
    assert seen == {1.0, 0.0, -1.0, "blank"}


def test_negbio_airspace_opacity_is_read_as_lung_opacity(tree, datalist):
    header = _read_gz_header(tree["negbio_csv"])
    assert "Airspace Opacity" in header and "Lung Opacity" not in header
    raw = read_labeler_csv(tree["negbio_csv"])
    for study, row in raw.items():
        np.testing.assert_array_equal(row.values[LUNG_OPACITY], tree["negbio"][study][LUNG_OPACITY])
    # The labelers disagree in that column somewhere, so reading the wrong column would show.
    assert any(
        not np.array_equal(tree["negbio"][s][LUNG_OPACITY], tree["chexpert"][s][LUNG_OPACITY], equal_nan=True)
        for s in tree["study_ids"]
    )
    items = {item["study_id"]: item for item in _items(datalist)}
    for study, item in items.items():
        assert item["labels"][0][LUNG_OPACITY] == _expected(tree["negbio"][study], 0.0, 0.0)[LUNG_OPACITY]


def _read_gz_header(path: Path) -> list[str]:
    import gzip

    with gzip.open(path, "rt") as stream:
        return next(csv.reader(stream))


def test_blank_policy_missing_and_uncertain_missing(tree):
    datalist = build_mimic_datalist(
        MimicFiles.find(tree["root"]), label_sets=["che_u1", "che_umissing"], blank=math.nan
    )
    assert datalist.label_sets == ["che_u1", "che_umissing"]
    for item in _items(datalist):
        che = tree["chexpert"][item["study_id"]]
        assert item["labels"][0] == _expected(che, 1.0, math.nan)
        assert item["labels"][1] == _expected(che, math.nan, math.nan)
    with pytest.raises(ValueError, match="blank"):
        build_mimic_datalist(MimicFiles.find(tree["root"]), blank=1.0)


def test_apply_label_policy_table():
    raw = np.array([1.0, 0.0, -1.0, math.nan])
    np.testing.assert_array_equal(apply_label_policy(raw, 0.0, 0.0), [1, 0, 0, 0])
    np.testing.assert_array_equal(apply_label_policy(raw, 1.0, math.nan), [1, 0, 1, math.nan])


def test_view_filter_options(tree):
    files = MimicFiles.find(tree["root"])
    everything = build_mimic_datalist(files, views=None)
    assert sum(everything.counts().values()) == tree["n_images"]
    assert len(everything.exclusions) == 0
    pa_only = build_mimic_datalist(files, views=["pa"], allow_empty_splits=True)
    assert {item["view"] for item in _items(pa_only)} == {"PA"}
    n_pa = sum(image["view"] == "PA" for image in tree["images"])
    assert sum(pa_only.counts().values()) == n_pa


def test_reports_are_cleaned_and_optional(tree, datalist):
    for item in _items(datalist):
        assert item["report"].startswith("FINDINGS: Synthetic findings paragraph")
        assert "IMPRESSION:" in item["report"] and DEID_TOKEN in item["report"]
        assert "___" not in item["report"] and "INDICATION" not in item["report"]
    without = build_mimic_datalist(MimicFiles.find(tree["root"]), include_reports=False)
    assert all("report" not in item for item in _items(without))


def test_dicom_tree(tmp_path):
    tree = make_mimic_tree(tmp_path, image_format="dcm")
    datalist = build_mimic_datalist(MimicFiles.find(tmp_path), image_format="dcm")
    assert all(item["image"].endswith(".dcm") for item in _items(datalist))
    assert datalist.counts() == tree["frontal_per_split"]
    with pytest.raises(DatalistSourceError, match="image file missing"):
        build_mimic_datalist(MimicFiles.find(tmp_path), image_format="jpg")


def test_written_datalist_loads_into_tensors_with_nan(tree, tmp_path):
    from monai.data import load_decathlon_datalist

    from l2v_monai.data.transforms import label_transforms

    datalist = build_mimic_datalist(MimicFiles.find(tree["root"]), blank=math.nan)
    out = tree["root"] / "datalists" / "mimic.json"
    written, excluded = write_datalist(datalist, out)
    document = json.loads(written.read_text())
    assert set(document) == {"findings", "label_sets", "training", "validation", "test"}
    # Images under the datalist's parent folder are written as absolute paths, not "../" chains.
    assert Path(document["training"][0]["image"]).is_absolute()
    assert excluded == exclusions_path(out) and json.loads(excluded.read_text())["total"] == len(datalist.exclusions)
    near = write_datalist(datalist, tree["root"] / "mimic.json")[0]
    assert json.loads(near.read_text())["training"][0]["image"].startswith("files/p")
    items = load_decathlon_datalist(near, is_segmentation=False, data_list_key="training")
    assert Path(items[0]["image"]).is_file()
    converted = label_transforms(num_label_sets=4, num_findings=N)[0](items[0])
    labels = converted["labels"].numpy()
    assert labels.shape == (4, N)
    expected = [[math.nan if v is None else v for v in row] for row in datalist.splits["training"][0]["labels"]]
    np.testing.assert_array_equal(labels, np.array(expected, dtype=np.float32))


# --- studies and labelers that do not line up -------------------------------------------------


def test_study_missing_from_one_labeler_keeps_its_image_with_missing_sets(plain_tree):
    rows = _read_rows(plain_tree["negbio_csv"])
    dropped = rows.pop(1)[1]
    _write_rows(plain_tree["negbio_csv"], rows)
    datalist = build_mimic_datalist(MimicFiles.find(plain_tree["root"]))
    items = [item for item in _items(datalist) if item["study_id"] == dropped]
    assert items, "the study's images must stay"
    for item in items:
        assert item["labels"][0] == [None] * N and item["labels"][1] == [None] * N
        assert None not in item["labels"][2] and None not in item["labels"][3]


def test_study_without_any_label_row_is_an_exclusion(plain_tree):
    for key in ("negbio_csv", "chexpert_csv"):
        rows = _read_rows(plain_tree[key])
        _write_rows(plain_tree[key], [rows[0], *rows[2:]])
    datalist = build_mimic_datalist(MimicFiles.find(plain_tree["root"]))
    assert datalist.exclusions.counts()["study has no row in any label CSV"] >= 1


def test_labelled_study_without_images_is_listed_or_strict_error(plain_tree):
    rows = _read_rows(plain_tree["chexpert_csv"])
    rows.append(["10009999", "59999999", *["1.0"] * N])
    _write_rows(plain_tree["chexpert_csv"], rows)
    files = MimicFiles.find(plain_tree["root"])
    datalist = build_mimic_datalist(files)
    orphans = [e for e in datalist.exclusions.entries if "no image" in e.reason]
    assert [(e.ident, e.line, e.source) for e in orphans] == [("59999999", len(rows), str(plain_tree["chexpert_csv"]))]
    with pytest.raises(DatalistSourceError, match=rf"chexpert.*line {len(rows)}.*1 study has no image"):
        build_mimic_datalist(files, strict=True)


# --- bad input ----------------------------------------------------------------------------------


def test_missing_image_names_metadata_line_or_is_excluded(plain_tree):
    frontal = next(image for image in plain_tree["images"] if image["view"] == "PA")
    frontal["paths"]["jpg"].unlink()
    line = 2 + plain_tree["images"].index(frontal)
    files = MimicFiles.find(plain_tree["root"])
    with pytest.raises(
        DatalistSourceError, match=rf"metadata\.csv, line {line}: image file missing .*{frontal['dicom_id']}"
    ):
        build_mimic_datalist(files)
    datalist = build_mimic_datalist(files, missing_images="exclude")
    assert datalist.exclusions.counts()["image file missing"] == 1
    assert build_mimic_datalist(files, check_images=False).counts() == plain_tree["frontal_per_split"]


@pytest.mark.parametrize("bad", ["2.0", "yes", "0.5", "nan"])
def test_label_value_outside_the_four_kinds_names_file_line_column(plain_tree, bad):
    rows = _read_rows(plain_tree["chexpert_csv"])
    column = rows[0].index("Edema")
    rows[3][column] = bad
    _write_rows(plain_tree["chexpert_csv"], rows)
    with pytest.raises(DatalistSourceError, match=rf"chexpert\.csv, line 4: column 'Edema': label value '{bad}'"):
        build_mimic_datalist(MimicFiles.find(plain_tree["root"]))


def test_duplicated_dicom_id_in_metadata_names_both_lines(plain_tree):
    rows = _read_rows(plain_tree["metadata_csv"])
    rows.append(list(rows[2]))
    _write_rows(plain_tree["metadata_csv"], rows)
    with pytest.raises(DatalistSourceError, match=rf"metadata\.csv, lines 3, {len(rows)}: duplicated dicom_id"):
        build_mimic_datalist(MimicFiles.find(plain_tree["root"]))


def test_duplicated_study_in_label_csv_names_lines(plain_tree):
    rows = _read_rows(plain_tree["negbio_csv"])
    rows.insert(3, list(rows[1]))
    _write_rows(plain_tree["negbio_csv"], rows)
    with pytest.raises(DatalistSourceError, match=r"negbio\.csv, lines 2, 4: duplicated study_id"):
        build_mimic_datalist(MimicFiles.find(plain_tree["root"]))


def test_missing_finding_column_and_missing_files(plain_tree, tmp_path):
    rows = _read_rows(plain_tree["chexpert_csv"])
    column = rows[0].index("Fracture")
    _write_rows(plain_tree["chexpert_csv"], [[c for i, c in enumerate(row) if i != column] for row in rows])
    with pytest.raises(DatalistSourceError, match=r"chexpert\.csv, line 1: missing finding column\(s\) \['Fracture'\]"):
        build_mimic_datalist(MimicFiles.find(plain_tree["root"]))
    # NegBio alone still builds: only the label files a label set needs are read.
    only_neg = build_mimic_datalist(MimicFiles.find(plain_tree["root"]), label_sets=["neg_u1"])
    assert only_neg.label_sets == ["neg_u1"]
    with pytest.raises(FileNotFoundError, match="mimic-cxr-2.0.0-split"):
        MimicFiles.find(tmp_path)


def test_empty_split_is_an_error_naming_it_unless_allowed(plain_tree):
    rows = _read_rows(plain_tree["split_csv"])
    _write_rows(plain_tree["split_csv"], [rows[0]] + [[*r[:3], "train" if r[3] == "test" else r[3]] for r in rows[1:]])
    files = MimicFiles.find(plain_tree["root"])
    with pytest.raises(EmptySplitError, match="test"):
        build_mimic_datalist(files)
    assert build_mimic_datalist(files, allow_empty_splits=True).counts()["test"] == 0


def test_unknown_split_name_and_missing_split_row(plain_tree):
    rows = _read_rows(plain_tree["split_csv"])
    rows[5][3] = "holdout"
    _write_rows(plain_tree["split_csv"], rows)
    with pytest.raises(DatalistSourceError, match=r"split\.csv, line 6: split 'holdout'"):
        build_mimic_datalist(MimicFiles.find(plain_tree["root"]))
    rows[5][3] = "train"
    frontal_line = next(i for i, r in enumerate(rows) if i and r[0] == plain_tree["images"][0]["dicom_id"])
    del rows[frontal_line]
    _write_rows(plain_tree["split_csv"], rows)
    datalist = build_mimic_datalist(MimicFiles.find(plain_tree["root"]))
    assert datalist.exclusions.counts()["dicom_id not in the split CSV"] == 1


def test_missing_report_file_is_an_error_naming_it(plain_tree):
    image = plain_tree["images"][0]
    report = image["paths"]["jpg"].parent.with_name(f"s{image['study_id']}.txt")
    report.unlink()
    with pytest.raises(FileNotFoundError, match=f"s{image['study_id']}.txt"):
        build_mimic_datalist(MimicFiles.find(plain_tree["root"]))
    assert build_mimic_datalist(MimicFiles.find(plain_tree["root"]), include_reports=False).counts()


def test_label_set_names_are_validated():
    assert LabelSetSpec.parse("neg_u1") == LabelSetSpec("neg_u1", "negbio", 1.0)
    assert math.isnan(LabelSetSpec.parse("chexpert_umissing").uncertain)
    with pytest.raises(ValueError, match="label set name 'rad_u0'"):
        LabelSetSpec.parse("rad_u0")


# --- hand-labelled test CSV ---------------------------------------------------------------------


def _hand_rows(tree, key: str) -> list[list[str]]:
    rows = [[key, *CHEXPERT_FINDINGS]]
    for index, image in enumerate(tree["images"][:3]):
        ident = image["dicom_id"] if key == "dicom_id" else str(image["paths"]["jpg"].relative_to(tree["root"]))
        rows.append([ident, *[("1", "0", "")[(index + j) % 3] for j in range(N)]])
    return rows


def test_hand_labelled_csv_by_image_path(plain_tree):
    path = plain_tree["root"] / "hand.csv"
    _write_rows(path, _hand_rows(plain_tree, "image"))
    datalist = build_hand_labelled_datalist(path)
    assert datalist.counts() == {"training": 0, "validation": 0, "test": 3}
    assert datalist.label_sets == []
    first = datalist.splits["test"][0]
    assert first["label"][:3] == [1.0, 0.0, None] and "labels" not in first
    assert Path(first["image"]) == plain_tree["images"][0]["paths"]["jpg"]


def test_hand_labelled_csv_by_dicom_id(plain_tree):
    path = plain_tree["root"] / "hand.csv"
    _write_rows(path, _hand_rows(plain_tree, "dicom_id"))
    datalist = build_hand_labelled_datalist(
        path, image_root=plain_tree["root"], metadata_csv=plain_tree["metadata_csv"]
    )
    assert [Path(item["image"]) for item in datalist.splits["test"]] == [
        image["paths"]["jpg"] for image in plain_tree["images"][:3]
    ]
    with pytest.raises(ValueError, match="needs image_root and metadata_csv"):
        build_hand_labelled_datalist(path)


def test_hand_labelled_items_keep_the_patient_view_and_the_csvs_own_metadata(plain_tree):
    """The evaluation groups its bootstrap by patient and reports subgroups: the preparer keeps what the sources say."""
    path = plain_tree["root"] / "hand.csv"
    rows = _hand_rows(plain_tree, "dicom_id")
    rows = [rows[0] + ["sex", "site"]] + [r + [("F", "M", "")[i], "north"] for i, r in enumerate(rows[1:])]
    _write_rows(path, rows)
    items = build_hand_labelled_datalist(path, image_root=plain_tree["root"], metadata_csv=plain_tree["metadata_csv"]).splits["test"]
    for item, image in zip(items, plain_tree["images"]):
        assert item["subject_id"] == image["subject_id"] and item["view"] == image["view"] and item["site"] == "north"
    assert [item.get("sex") for item in items] == ["F", "M", None]  # a blank cell is left out


def test_hand_labelled_csv_rejects_uncertain_duplicates_and_missing_images(plain_tree):
    path = plain_tree["root"] / "hand.csv"
    rows = _hand_rows(plain_tree, "image")
    rows[2][5] = "-1"
    _write_rows(path, rows)
    with pytest.raises(
        DatalistSourceError, match=rf"hand\.csv, line 3: column '{CHEXPERT_FINDINGS[4]}': label value '-1'"
    ):
        build_hand_labelled_datalist(path)
    rows = _hand_rows(plain_tree, "image")
    rows.append(list(rows[1]))
    _write_rows(path, rows)
    with pytest.raises(DatalistSourceError, match=r"lines 2, 5: duplicated image"):
        build_hand_labelled_datalist(path)
    rows = _hand_rows(plain_tree, "image")
    rows[3][0] = "files/nowhere.jpg"
    _write_rows(path, rows)
    with pytest.raises(DatalistSourceError, match=r"hand\.csv, line 4: image file missing"):
        build_hand_labelled_datalist(path)


def _script(name: str):
    import importlib

    return importlib.import_module(f"l2v_monai.cli.{name}")


def test_prepare_mimic_script_writes_datalist_and_prints_exclusions(plain_tree, capsys):
    out = plain_tree["root"] / "datalist.json"
    script = _script("prepare_mimic")
    assert script.main(["labelers", "--root", str(plain_tree["root"]), "--blank", "missing", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert len(document["training"]) == plain_tree["frontal_per_split"]["training"]
    assert document["label_sets"] == ["neg_u0", "neg_u1", "che_u0", "che_u1"]
    n_lateral = plain_tree["n_images"] - plain_tree["n_frontal"]
    assert f"{n_lateral}  view LATERAL not in AP/PA" in printed
    assert "Synthetic findings" not in printed  # never report text
    hand = plain_tree["root"] / "hand.csv"
    _write_rows(hand, _hand_rows(plain_tree, "dicom_id"))
    assert script.main(["hand-labels", "--csv", str(hand), "--root", str(plain_tree["root"]), "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["test"]) == 3


def test_write_refuses_nan_naming_the_file(tmp_path):
    from l2v_monai.data.datalist import Datalist

    datalist = Datalist(["Edema"], ["a"], {"training": [{"image": "x.png", "labels": [[math.nan]]}]})
    with pytest.raises(ValueError, match=r"bad\.json: cannot write valid JSON"):
        write_datalist(datalist, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
