"""Bad input gives a clear error, early, naming the item or file. The input half of the fault checks.

Most tests call the library directly on small hand-made datalists; four run ``python -m monai.bundle``
to check what a user sees: the start-up check stops training before any image is read, and the
last line of output is the clear error, not MONAI's ``RuntimeError: Failed to instantiate ...``;
inference keeps going past unreadable files, writes ``failures.csv`` and exits non-zero.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
import torch
from PIL import Image

from l2v_monai.bundle_scripts.errors import cause_last_text, root_cause
from l2v_monai.data.cache import CacheBuildError, build_cache
from l2v_monai.data.datalist import DatalistSourceError, read_csv_table
from l2v_monai.bundle_scripts.inputs import NoInputImagesError, inference_items
from l2v_monai.data.manifest import build_manifest_datalist
from l2v_monai.data.transforms import ImageDecodeError, read_chest_xray
from l2v_monai.data.validation import DatalistCheckError, check_datalist
from l2v_monai.labels import LabelValueError
from l2v_monai.strategies import DawidSkene, MajorityVote, attach_targets

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
FINDINGS = ["Atelectasis", "Cardiomegaly", "Edema"]
SETS = ["reader1", "reader2"]
REPORT = "Secret report text of patient Jane Roe"
BAD_VR = pydicom.data.get_testdata_file("badVR.dcm")  # NumberOfFrames '1A', shipped with pydicom


def _item(index: int, labels: list | None = None, **extra) -> dict:
    labels = labels if labels is not None else [[index % 2, 1 - index % 2, None], [index % 2, 1 - index % 2, 1]]
    return {"image": f"/data/img{index}.png", "labels": labels, "report": REPORT, **extra}


def _datalist(n_train: int = 6, n_val: int = 4) -> dict:
    return {
        "training": [_item(i) for i in range(n_train)],
        "validation": [_item(100 + i) for i in range(n_val)],
    }


def _check(data: dict, **kwargs) -> dict:
    return check_datalist(data, FINDINGS, SETS, source="dl.json", **kwargs)


def _problems(data: dict, **kwargs) -> DatalistCheckError:
    with pytest.raises(DatalistCheckError) as caught:
        _check(data, **kwargs)
    assert REPORT not in str(caught.value)  # items are named by split, index and image, never report text
    return caught.value


# ---- the start-up check ----------------------------------------------------------------------


def test_a_clean_datalist_passes_and_is_returned_unchanged() -> None:
    data = _datalist()
    assert _check(data) is data


def test_every_bad_item_is_listed_at_once_with_split_index_and_image() -> None:
    data = _datalist()
    data["training"][1]["labels"][0][2] = "yes"
    data["training"][2]["labels"] = [[0, 1, 1]] * 3  # 3 label sets
    data["training"][3]["labels"] = [[0] * 13, [1] * 13]  # 13 findings
    del data["training"][4]["labels"]
    data["validation"][0]["labels"] = None
    data["validation"][1]["labels"][1][0] = -1.0  # uncertain, not mapped
    message = str(_problems(data))
    assert message.startswith("dl.json: 6 problems in 10 items")
    assert "training[1] (image /data/img1.png): value 'yes' at reader1/Edema is not a number" in message
    assert "training[2] (image /data/img2.png): has shape 3 × 3, expected 2 × 3 (label sets × findings)" in message
    assert "training[3] (image /data/img3.png): row 0" not in message and "has shape 2 × 13, expected 2 × 3" in message
    assert "no 'labels' key" in message and "training[4] (image /data/img4.png)" in message
    assert "'labels' is null" in message and "validation[0] (image /data/img100.png)" in message
    assert "validation[1] (image /data/img101.png): value -1 at reader2/Atelectasis is outside [0, 1]" in message


def test_long_listings_are_capped_with_a_count() -> None:
    data = _datalist(n_train=30)
    for item in data["training"]:
        item["labels"] = None
    message = str(_problems(data))
    assert "'labels' is null (30):" in message and "... and 25 more" in message
    assert message.count("/data/img") == 5


def test_duplicates_and_train_validation_overlap_are_errors_unless_allowed() -> None:
    data = _datalist()
    data["training"].append(copy.deepcopy(data["training"][0]))
    data["validation"].append({**_item(3), "image": "/data/./img3.png"})  # the same file, spelled differently
    message = str(_problems(data))
    assert "same image twice in training (1):\n    training[6] (image /data/img0.png): also training[0]" in message
    assert "image also in training (1):\n    validation[4] (image /data/./img3.png): training[3]" in message
    assert message.rstrip().endswith("pass --allow_duplicates True.")
    assert _check(data, allow_duplicates=True) is data


def test_all_null_training_labels_stop_training() -> None:
    data = _datalist()
    for item in data["training"]:
        item["labels"] = [[None] * 3, [None] * 3]
    assert "every training label is null" in str(_problems(data))
    data = _datalist()
    for item in data["training"]:
        item["labels"][1] = [None] * 3
    assert "label set 'reader2'" in str(_problems(data))


def test_no_validation_finding_with_both_classes_stops_at_start_up() -> None:
    data = _datalist()
    for item in data["validation"]:
        item["labels"] = [[0, 1, None], [0, 1, None]]  # majority: Atelectasis 0, Cardiomegaly 1, Edema none
    message = str(_problems(data))
    assert "no finding has both classes in validation under the evaluator's target 'majority'" in message
    assert "Atelectasis: only 0 (4 items); Cardiomegaly: only 1 (4 items); Edema: no target" in message
    # One finding with both classes is enough to select a model on (the metric names the others).
    data["validation"][0]["labels"] = [[1, 1, None], [1, 1, None]]
    assert _check(data) is data


def test_clean_target_needs_label_on_every_evaluated_item() -> None:
    items = [{"image": f"/h/{i}.png", "label": [i % 2, 1 - i % 2, 1]} for i in range(4)]
    items.append({"image": "/h/4.png"})
    items[1]["label"] = [0, "1", 0]
    with pytest.raises(DatalistCheckError) as caught:
        check_datalist({"test": items}, FINDINGS, None, splits=["test"], evaluation_split="test", target="clean")
    message = str(caught.value)
    assert "no 'label' key: the clean hand label that evaluation target 'clean' scores against" in message
    assert "test[4] (image /h/4.png)" in message
    assert "bad 'label' (1):\n    test[1] (image /h/1.png): value '1' at Cardiomegaly is not a number" in message


def test_items_where_only_some_carry_a_key_are_named() -> None:
    data = _datalist()
    del data["training"][2]["report"]
    data["training"][0]["study_id"] = "s1"
    message = str(_problems(data))
    assert "no 'report' key while 5 other training items have one" in message and "training[2] (image /data/img2.png)" in message
    assert "no 'study_id' key while 1 other training items have one" in message
    # With report embeddings every item needs its study.
    data = _datalist()
    message = str(_problems(data, study_key="study_id"))
    assert "no 'study_id' key: the study whose report embedding the network reads (10)" in message


# ---- attach_targets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda it: it["labels"][0].__setitem__(1, "yes"), "value 'yes' at [0, 1] is not a number"),
        (lambda it: it.__setitem__("labels", [[0, 1, 1]] * 3), "has shape 3 × 3, expected 2 × 3"),
        (lambda it: it.__setitem__("labels", [[0] * 13, [1] * 13]), "has shape 2 × 13, expected 2 × 3"),
        (lambda it: it.pop("labels"), "has no 'labels' key"),
        (lambda it: it.__setitem__("labels", None), "'labels' is null"),
    ],
    ids=["yes", "three-sets", "thirteen-findings", "no-labels-key", "labels-null"],
)
@pytest.mark.parametrize("strategy", [DawidSkene, MajorityVote])
def test_attach_targets_names_the_bad_item(change, expected: str, strategy) -> None:
    items = _datalist()["training"]
    change(items[3])
    with pytest.raises(LabelValueError) as caught:
        attach_targets(items, strategy(), num_sets=2, num_outputs=3)
    assert "1 of 6 training items have a bad 'labels'" in str(caught.value)
    assert "training[3] (image /data/img3.png): " in str(caught.value) and expected in str(caught.value)


def test_attach_targets_without_expected_shape_still_catches_disagreeing_items() -> None:
    items = _datalist()["training"]
    items[5]["labels"] = [[0, 1, 1]] * 3
    with pytest.raises(LabelValueError, match=r"training\[5\] \(image /data/img5.png\): 'labels' has shape 3 × 3, but"):
        attach_targets(items, DawidSkene())


# ---- images ---------------------------------------------------------------------------------


def _png(path: Path, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 36), dtype=np.uint8)).save(path)
    return path


def test_bad_vr_dicom_is_a_decode_error_and_does_not_abort_the_cache_build(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="NumberOfFrames is '1A', not an integer"):
        read_chest_xray(BAD_VR)
    good = _png(tmp_path / "good.png")
    items = [{"image": BAD_VR}, {"image": str(good)}]
    with pytest.raises(CacheBuildError) as caught:
        build_cache(items, tmp_path / "cache", 16, progress=False)
    assert [f.image for f in caught.value.failures] == [BAD_VR]
    result = build_cache(items, tmp_path / "cache", 16, on_error="exclude", progress=False)
    assert [it["source_image"] for it in result.items] == [str(good)] and [f.image for f in result.excluded] == [BAD_VR]


# ---- manifests and CSV files ------------------------------------------------------------------


def _manifest(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "manifest.csv") -> Path:
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


MANIFEST = "image,r1/Edema,r2/Edema\na.png,1,0\nb.png,0,\n"


def test_a_utf8_manifest_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    datalist = build_manifest_datalist(_manifest(tmp_path, "\ufeff" + MANIFEST))
    assert datalist.label_sets == ["r1", "r2"] and datalist.findings == ["Edema"]
    assert [it["labels"] for it in datalist.splits["training"]] == [[[1.0], [0.0]], [[0.0], [None]]]


@pytest.mark.parametrize(("delimiter", "named"), [(";", "semicolon ';'"), ("\t", "tab")])
def test_another_delimiter_is_named(tmp_path: Path, delimiter: str, named: str) -> None:
    path = _manifest(tmp_path, MANIFEST.replace(",", delimiter))
    with pytest.raises(DatalistSourceError) as caught:
        build_manifest_datalist(path)
    assert str(caught.value).startswith(f"{path}, line 1: is not comma-separated: its header uses {named}")


def test_a_cp1252_manifest_names_file_line_column_and_encoding(tmp_path: Path) -> None:
    path = _manifest(tmp_path, "image,r1/Edema,r2/Edema\na.png,1,0\nb.png,0,1\nMüller.png,1,1\n", "cp1252")
    with pytest.raises(DatalistSourceError) as caught:
        build_manifest_datalist(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 4: is not UTF-8: byte 0xFC at column 2")
    assert "Windows-1252 (cp1252)" in message and "CSV UTF-8" in message


def test_utf16_and_gzip_csvs(tmp_path: Path) -> None:
    with pytest.raises(DatalistSourceError, match="encoded as UTF-16"):
        read_csv_table(_manifest(tmp_path, "\ufeff" + MANIFEST, "utf-16-le"))
    import gzip

    zipped = tmp_path / "m.csv.gz"
    zipped.write_bytes(gzip.compress(("\ufeff" + MANIFEST).encode("utf-8")))
    assert list(read_csv_table(zipped, ["image"]).columns) == ["image", "r1/Edema", "r2/Edema"]


def test_csv_cells_are_stripped_text_short_rows_padded_long_rows_named(tmp_path: Path) -> None:
    # Read with the csv module (the core has no pandas): cells exactly as written, "NA" stays "NA".
    table = read_csv_table(_manifest(tmp_path, ' image , r1/Edema\n a.png , NA\n\n"b, c.png"\n'), ["image"])
    assert table.columns == ["image", "r1/Edema"] and len(table) == 2
    assert table["image"] == ["a.png", "b, c.png"] and table["r1/Edema"] == ["NA", ""]
    assert table.records() == [{"image": "a.png", "r1/Edema": "NA"}, {"image": "b, c.png", "r1/Edema": ""}]
    with pytest.raises(KeyError, match=r"no column 'label'; the header has \['image', 'r1/Edema'\]"):
        table["label"]
    path = _manifest(tmp_path, "image,r1/Edema\na.png,1\nb.png,0,1\n")
    with pytest.raises(DatalistSourceError) as caught:
        read_csv_table(path)
    assert str(caught.value) == f"{path}, line 3: cannot be read as a CSV file: 3 cells where the header has 2"
    with pytest.raises(DatalistSourceError, match=r"is empty \(no header line\)"):
        read_csv_table(_manifest(tmp_path, ""))


def test_a_cp1252_report_file_is_named_with_its_manifest_line(tmp_path: Path) -> None:
    (tmp_path / "r.txt").write_bytes("IMPRESSION: épanchement.".encode("cp1252"))
    path = _manifest(tmp_path, "image,report,r1/Edema\na.png,r.txt,1\n")
    with pytest.raises(DatalistSourceError, match=r"manifest.csv, line 2: report file .*r.txt, line 1: is not UTF-8"):
        build_manifest_datalist(path)


# ---- the last line a bundle user sees ------------------------------------------------------


def test_cause_last_text_unwraps_monai_wrappers_only() -> None:
    cause = CacheBuildError([], total=3)
    try:
        try:
            raise cause
        except CacheBuildError as error:
            raise RuntimeError("Failed to instantiate component 'x' with keywords: data") from error
    except RuntimeError as wrapped:
        assert root_cause(wrapped) is cause
        assert cause_last_text(wrapped).rstrip().endswith("keep the exclusion list.")
    assert cause_last_text(ValueError("plain")) == ""
    own = ImageDecodeError("x.dcm", "bad")
    own.__cause__ = ValueError("pydicom detail")
    assert root_cause(own) is own  # our own chained errors are not unwrapped


def _bundle(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _last_lines(proc: subprocess.CompletedProcess, n: int) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()][-n:]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A datalist of eight small PNGs with 4 label sets × 14 findings, written as prepare scripts do."""
    from l2v_monai.findings import CHEXPERT_FINDINGS

    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    items = []
    for index in range(8):
        image = _png(root / f"{index}.png", index)
        labels = rng.integers(0, 2, (4, len(CHEXPERT_FINDINGS))).astype(float).tolist()
        items.append({"image": image.name, "study_id": str(index), "labels": labels})
    document = {"findings": CHEXPERT_FINDINGS, "label_sets": ["neg_u0", "neg_u1", "che_u0", "che_u1"],
                "training": items[:6], "validation": items[6:], "test": []}
    (root / "datalist.json").write_text(json.dumps(document))
    return root


def _train(tree: Path, datalist: Path, bundle_root: Path) -> subprocess.CompletedProcess:
    shutil.copytree(ROOT / "bundle" / "scripts", bundle_root / "scripts")  # bundle_root holds the bundle's scripts/
    return _bundle("run", "training", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(tree),
                   "--datalist", str(datalist), "--bundle_root", str(bundle_root), "--image_size", "32",
                   "--batch_size", "4", "--epochs", "1", "--num_workers", "0", "--cache_dir", str(bundle_root / "cache"))


def test_training_stops_at_start_up_with_the_check_as_last_lines(tree: Path, tmp_path: Path) -> None:
    document = json.loads((tree / "datalist.json").read_text())
    document["validation"][1]["labels"][0][0] = "yes"  # today found only after a whole training epoch
    document["training"].append(dict(document["training"][0]))
    bad = tree / "bad.json"
    bad.write_text(json.dumps(document))
    proc = _train(tree, bad, tmp_path)
    assert proc.returncode != 0
    last = _last_lines(proc, 6)
    assert last[0].startswith(f"l2v_monai.data.validation.DatalistCheckError: {bad}: 2 problems in 9 items")
    assert "validation[1] (image" in "\n".join(last) and "value 'yes' at neg_u0/Atelectasis" in "\n".join(last)
    assert last[-1].endswith("pass --allow_duplicates True.")
    assert not (tmp_path / "cache").exists()  # stopped before a single image was decoded


def test_a_cache_build_error_is_the_last_thing_printed(tree: Path, tmp_path: Path) -> None:
    document = json.loads((tree / "datalist.json").read_text())
    shutil.copy(BAD_VR, tree / "bad.dcm")
    document["training"][2]["image"] = "bad.dcm"
    path = tree / "badimage.json"
    path.write_text(json.dumps(document))
    proc = _train(tree, path, tmp_path)
    assert proc.returncode != 0
    last = _last_lines(proc, 3)
    assert last[0] == "l2v_monai.data.cache.CacheBuildError: 1 of 6 images could not be cached:"
    assert "bad.dcm: malformed DICOM header: NumberOfFrames is '1A'" in last[1]
    assert last[-1] == "Fix or remove them, or build with on_error='exclude' and keep the exclusion list."


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle root with an untrained ResNet-50 as models/model.pt: inference only needs weights to load."""
    from l2v_monai.bundle_scripts.networks import ResNet50Classifier

    root = tmp_path_factory.mktemp("bundle")
    shutil.copytree(ROOT / "bundle" / "scripts", root / "scripts")  # bundle_root holds the bundle's scripts/
    (root / "models").mkdir()
    torch.manual_seed(0)
    torch.save(ResNet50Classifier().state_dict(), root / "models" / "model.pt")
    return root


def _infer(folder: Path, bundle_root: Path) -> subprocess.CompletedProcess:
    return _bundle("run", "--config_file", str(CONFIGS / "inference.json"), "--dataset_dir", str(folder),
                   "--bundle_root", str(bundle_root), "--image_size", "32", "--batch_size", "2", "--num_workers", "0")


def test_inference_keeps_going_lists_failures_and_exits_non_zero(model_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    good = [_png(folder / f"{name}.png", seed) for seed, name in enumerate(["a", "c", "e"])]
    shutil.copy(BAD_VR, folder / "b.dcm")
    (folder / "d.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    proc = _infer(folder, model_root)
    assert proc.returncode == 1
    rows = list(csv.reader(open(model_root / "eval" / "predictions.csv")))
    assert [row[0] for row in rows] == [str(p) for p in good]  # the good images, in order, around the bad ones
    assert all(len(row) == 15 and 0 <= float(row[1]) <= 1 for row in rows)
    failures = list(csv.DictReader(open(model_root / "eval" / "failures.csv")))
    assert [(Path(f["image"]).name, f["reason"].split(":")[0]) for f in failures] == [
        ("b.dcm", "malformed DICOM header"), ("d.jpg", "unreadable image (OSError")]
    last = _last_lines(proc, 1)[0]
    assert last.startswith("scripts.postprocessing.UnreadableImagesError: 2 of 5 images could not be read")
    assert str(model_root / "eval" / "failures.csv") in last
    # Every image readable: exit 0 and a failures.csv with its header only.
    for bad in ("b.dcm", "d.jpg"):
        (folder / bad).unlink()
    proc = _infer(folder, model_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (model_root / "eval" / "failures.csv").read_text().strip() == "image,reason"


def test_inference_on_an_empty_folder_exits_non_zero(model_root: Path, tmp_path: Path) -> None:
    with pytest.raises(NoInputImagesError, match="holds no .dcm/.dicom/.jpg/.jpeg/.png files"):
        inference_items(tmp_path)
    proc = _infer(tmp_path, model_root)
    assert proc.returncode == 1
    assert _last_lines(proc, 1)[0] == (
        f"scripts.inputs.NoInputImagesError: image folder {tmp_path} holds no "
        ".dcm/.dicom/.jpg/.jpeg/.png files (it is empty)"
    )
