"""Hospital manifest CSV → datalist: label groups, uncertain policy, reports, splits, validation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from l2v_monai.data.datalist import DatalistSourceError, EmptySplitError, write_datalist
from l2v_monai.data.manifest import build_manifest_datalist, label_column_groups, uncertain_value
from l2v_monai.data.report_text import DEID_TOKEN

FINDINGS = ["Edema", "Cardiomegaly"]


def _image(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 100).save(path)
    return str(path)


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def site(tmp_path):
    """Four images (relative paths), two readers, a clean label group, one report file, splits."""
    for index in range(4):
        _image(tmp_path / "img" / f"{index}.png")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r0.txt").write_text(" FINDINGS: Big heart.\n\n IMPRESSION: Cardiomegaly, Dr. ___.\n")
    header = [
        "image", "report", "split",
        "reader1/Edema", "reader1/Cardiomegaly",
        "reader2/Cardiomegaly", "reader2/Edema",
        "label/Edema", "label/Cardiomegaly",
    ]  # fmt: skip
    rows = [
        ["img/0.png", "reports/r0.txt", "train", "1", "-1", "1.0", "", "1", "1"],
        ["img/1.png", "Heart normal.\nLungs clear.", "training", "0", "0", "0", "-1", "0", ""],
        ["img/2.png", "IMPRESSION: Edema.", "validate", "", "1", "0", "1", "", "0"],
        ["img/3.png", "No acute process.", "test", "-1.0", "0", "1", "0", "", ""],
    ]
    return _write(tmp_path / "manifest.csv", header, rows)


def test_groups_findings_and_uncertain_default_missing(site):
    datalist = build_manifest_datalist(site)
    assert datalist.findings == FINDINGS  # order of the first group
    assert datalist.label_sets == ["reader1", "reader2"]
    assert datalist.counts() == {"training": 2, "validation": 1, "test": 1}
    first, second = datalist.splits["training"]
    # reader2's columns are in the other order in the file: read by name, written in finding order.
    assert first["labels"] == [[1.0, None], [None, 1.0]]
    assert second["labels"] == [[0.0, 0.0], [None, 0.0]]
    assert datalist.splits["test"][0]["labels"] == [[None, 0.0], [0.0, 1.0]]
    assert first["label"] == [1.0, 1.0] and second["label"] == [0.0, None]
    assert Path(first["image"]) == site.parent / "img" / "0.png"


@pytest.mark.parametrize(("policy", "value"), [("0", 0.0), ("1", 1.0), (1, 1.0)])
def test_uncertain_policy(site, policy, value):
    first = build_manifest_datalist(site, uncertain=policy).splits["training"][0]
    assert first["labels"][0] == [1.0, value]


def test_uncertain_value_parsing():
    assert math.isnan(uncertain_value("missing"))
    assert uncertain_value("0") == 0.0
    with pytest.raises(ValueError, match="uncertain policy"):
        uncertain_value("half")


def test_reports_file_or_text_cleaned(site):
    datalist = build_manifest_datalist(site)
    first, second = datalist.splits["training"]
    assert first["report"] == f"FINDINGS: Big heart. IMPRESSION: Cardiomegaly, Dr. {DEID_TOKEN}."
    assert second["report"] == "Heart normal. Lungs clear."  # no headers: the whole text is kept
    assert datalist.splits["validation"][0]["report"] == "IMPRESSION: Edema."


def test_explicit_findings_reorder_and_validate(site):
    datalist = build_manifest_datalist(site, findings=["Cardiomegaly", "Edema"])
    assert datalist.splits["training"][0]["labels"] == [[None, 1.0], [1.0, None]]
    with pytest.raises(
        DatalistSourceError, match=r"label set 'reader1'.*missing \['Pneumonia'\]; unexpected \['Edema'\]"
    ):
        build_manifest_datalist(site, findings=["Cardiomegaly", "Pneumonia"])


def test_written_json_has_relative_paths_and_nulls(site):
    path, _ = write_datalist(build_manifest_datalist(site), site.parent / "datalist.json")
    document = json.loads(path.read_text())
    assert document["training"][0]["image"] == "img/0.png"
    assert document["training"][0]["labels"][0] == [1.0, None]


def test_mismatched_label_groups_raise(tmp_path):
    _image(tmp_path / "a.png")
    path = _write(tmp_path / "m.csv", ["image", "r1/Edema", "r1/Cardiomegaly", "r2/Edema"], [["a.png", "1", "0", "1"]])
    with pytest.raises(DatalistSourceError, match=r"m\.csv, line 1: label set 'r2'.*missing \['Cardiomegaly'\]"):
        build_manifest_datalist(path)


def test_unknown_column_raises(tmp_path):
    _image(tmp_path / "a.png")
    path = _write(tmp_path / "m.csv", ["image", "r1/Edema", "r1-Cardiomegaly"], [["a.png", "1", "0"]])
    with pytest.raises(DatalistSourceError, match=r"\['r1-Cardiomegaly'\] are neither"):
        build_manifest_datalist(path)
    assert label_column_groups(["image", "a/x", "b/x", "a/y"]) == {"a": ["x", "y"], "b": ["x"]}


@pytest.mark.parametrize("bad", ["2", "yes", "0.5"])
def test_bad_label_value_names_line_and_column(site, bad):
    rows = list(csv.reader(open(site)))
    rows[3][4] = bad
    _write(site, rows[0], rows[1:])
    with pytest.raises(
        DatalistSourceError, match=rf"manifest\.csv, line 4: column 'reader1/Cardiomegaly': label value '{bad}'"
    ):
        build_manifest_datalist(site)


def test_clean_label_group_rejects_uncertain(site):
    rows = list(csv.reader(open(site)))
    rows[2][7] = "-1"
    _write(site, rows[0], rows[1:])
    with pytest.raises(DatalistSourceError, match=r"line 3: column 'label/Edema': label value '-1'"):
        build_manifest_datalist(site)


def test_missing_image_report_duplicates_and_splits(site):
    rows = list(csv.reader(open(site)))
    header = rows[0]

    def rewrite(edit):
        new = [list(r) for r in rows[1:]]
        edit(new)
        _write(site, header, new)

    rewrite(lambda r: r[2].__setitem__(0, "img/missing.png"))
    with pytest.raises(DatalistSourceError, match=r"line 4: image file missing: .*missing\.png"):
        build_manifest_datalist(site)
    assert build_manifest_datalist(site, check_images=False).counts()["validation"] == 1
    rewrite(lambda r: r[1].__setitem__(1, "reports/none.txt"))
    with pytest.raises(DatalistSourceError, match=r"line 3: report file not found"):
        build_manifest_datalist(site)
    rewrite(lambda r: r[1].__setitem__(1, ""))
    with pytest.raises(DatalistSourceError, match=r"line 3: blank report"):
        build_manifest_datalist(site)
    assert "report" not in build_manifest_datalist(site, allow_missing_reports=True).splits["training"][1]
    rewrite(lambda r: r[3].__setitem__(0, "img/0.png"))
    with pytest.raises(DatalistSourceError, match=r"lines 2, 5: duplicated image"):
        build_manifest_datalist(site)
    rewrite(lambda r: r[3].__setitem__(2, "holdout"))
    with pytest.raises(DatalistSourceError, match=r"line 5: split 'holdout'"):
        build_manifest_datalist(site)
    rewrite(lambda r: r[3].__setitem__(2, "train"))
    with pytest.raises(EmptySplitError, match="test"):
        build_manifest_datalist(site)
    assert build_manifest_datalist(site, allow_empty_splits=True).counts()["test"] == 0


def test_without_split_column_rows_go_to_the_default_split(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    path = _write(tmp_path / "m.csv", ["image", "r1/Edema", "r2/Edema"], [["a.png", "1", "0"], ["b.png", "", "1"]])
    assert build_manifest_datalist(path).counts() == {"training": 2, "validation": 0, "test": 0}
    test_only = build_manifest_datalist(path, default_split="test")
    assert test_only.counts()["test"] == 2 and "report" not in test_only.splits["test"][0]
    with pytest.raises(ValueError, match="default_split"):
        build_manifest_datalist(path, default_split="dev")


def test_repeated_column_and_missing_image_column(tmp_path):
    path = _write(tmp_path / "m.csv", ["image", "r1/Edema", "r1/Edema"], [["a.png", "1", "0"]])
    with pytest.raises(DatalistSourceError, match=r"repeated in the header: \['r1/Edema'\]"):
        build_manifest_datalist(path)
    path = _write(tmp_path / "m.csv", ["path", "r1/Edema"], [["a.png", "1"]])
    with pytest.raises(DatalistSourceError, match=r"missing required column\(s\) \['image'\]"):
        build_manifest_datalist(path)


def test_prepare_manifest_script(site, capsys):
    from l2v_monai.cli import prepare_manifest as script

    out = site.parent / "out" / "datalist.json"
    assert script.main(["--manifest", str(site), "--out", str(out), "--uncertain", "1"]) == 0
    document = json.loads(out.read_text())
    assert document["label_sets"] == ["reader1", "reader2"] and document["training"][0]["labels"][0] == [1.0, 1.0]
    assert "training" in capsys.readouterr().out


def test_patient_and_subgroup_columns_are_kept_on_the_items(tmp_path):
    """The evaluation resamples whole patients and reports AUC per view, sex, age band, site and scanner."""
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    header = ["image", "patient_id", "view", "sex", "age_band", "site", "scanner", "r1/Edema", "label/Edema"]
    path = _write(tmp_path / "m.csv", header, [["a.png", "p1", "PA", "F", "40-49", "north", "DR-1", "1", "1"],
                                               ["b.png", "p1", "AP", "", "", "north", "DR-2", "0", "0"]])
    first, second = build_manifest_datalist(path, default_split="test").splits["test"]
    assert {k: first[k] for k in header[1:7]} == {"patient_id": "p1", "view": "PA", "sex": "F", "age_band": "40-49",
                                                  "site": "north", "scanner": "DR-1"}
    assert "sex" not in second and "age_band" not in second and second["view"] == "AP"
