"""The MONAI Label app as its users run it, headless: a LocalDatastore on an image folder, radiologists'
final labels, two training rounds, the relabeling queue as next-sample strategy, inference, a failed round.

The hand-label files and the checkpoint promotion are checked without MONAI Label; the app tests need
``monailabel`` (``make test-integration`` builds a venv with it) and train a ResNet-50 on 64-pixel
synthetic images for one epoch per round (CPU).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_copy import ROOT

SMALL = {"image_size": 64, "batch_size": 4, "num_workers": 0}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mimic(tmp_path_factory: pytest.TempPathFactory, prepare_tree) -> dict:
    """A synthetic MIMIC tree, its datalist, and an image folder of its training images named by dicom_id."""
    root = tmp_path_factory.mktemp("mimic")
    datalist = prepare_tree(root)["datalist"]
    studies = tmp_path_factory.mktemp("studies")
    for item in datalist["training"]:
        shutil.copyfile(root / item["image"], studies / f"{item['dicom_id']}.jpg")
    return {"root": root, "datalist": datalist, "findings": datalist["findings"], "studies": studies}


# ---------------------------------------------------------------------------------------------
# Without MONAI Label


def test_label_files_reach_the_hand_label_field(mimic: dict, tmp_path: Path) -> None:
    from l2v_monai.quality.label_files import merge_label_files, read_label_file

    findings = mimic["findings"]
    train, val = mimic["datalist"]["training"], mimic["datalist"]["validation"]
    files = {}
    for item, value in ((train[0], 1), (train[1], 0), (val[0], 1)):
        files[item["dicom_id"]] = tmp_path / f"{item['dicom_id']}.json"
        files[item["dicom_id"]].write_text(json.dumps({findings[0]: value, findings[1]: None}))
    (tmp_path / "elsewhere.json").write_text(json.dumps({findings[2]: 1}))
    files["not-in-the-datalist"] = tmp_path / "elsewhere.json"
    out = mimic["root"] / "datalist_test_merge.json"
    counts = merge_label_files(mimic["root"] / "datalist.json", files, out)
    assert counts["imported"] == {"training": 2, "validation": 1} and counts["unmatched"] == 1
    merged = json.loads(out.read_text())
    by_id = {it["dicom_id"]: it for split in ("training", "validation") for it in merged[split]}
    assert by_id[train[0]["dicom_id"]]["label"][:2] == [1, None] and by_id[train[1]["dicom_id"]]["label"][0] == 0
    assert by_id[val[0]["dicom_id"]]["label"][0] == 1
    assert all(it["label"] is None or all(v is None for v in it["label"]) for it in merged["training"][2:])
    assert merged["training"][0]["image"] == mimic["datalist"]["training"][0]["image"]  # relative paths still resolve
    bad = tmp_path / "bad.json"
    for document, message in (({findings[0]: 2}, "1, 0 or null"), ({"Nodule": 1}, "unknown finding"), ({findings[0]: True}, "1, 0 or null")):
        bad.write_text(json.dumps(document))
        with pytest.raises(ValueError, match=message):
            read_label_file(bad, findings)
    with pytest.raises(ValueError, match="folder"):
        merge_label_files(mimic["root"] / "datalist.json", {}, tmp_path / "datalist.json")


def test_promote_checkpoints_replaces_only_after_a_complete_run(tmp_path: Path) -> None:
    from l2v_monai.engine.checkpoints import promote_checkpoints

    models, staging = tmp_path / "models", tmp_path / "models" / ".round"
    staging.mkdir(parents=True)
    (models / "model.pt").write_bytes(b"old model")
    (models / "checkpoint.pt").write_bytes(b"old checkpoint")
    (staging / "checkpoint.pt").write_bytes(b"new checkpoint")
    with pytest.raises(FileNotFoundError, match="model.pt"):
        promote_checkpoints(staging, models)  # a run that saved no model: nothing moves
    assert (models / "model.pt").read_bytes() == b"old model" and (models / "checkpoint.pt").read_bytes() == b"old checkpoint"
    (staging / "model.pt").write_bytes(b"new model")
    promote_checkpoints(staging, models)
    assert (models / "model.pt").read_bytes() == b"new model" and (models / "checkpoint.pt").read_bytes() == b"new checkpoint"
    assert not list(staging.iterdir())


# ---------------------------------------------------------------------------------------------
# MONAI Label


@pytest.fixture(scope="module")
def app(mimic: dict, tmp_path_factory: pytest.TempPathFactory):
    """The app on the image folder, from an app folder written by the module's ``init`` command."""
    pytest.importorskip("monailabel")
    from l2v_monai.apps import monai_label

    app_dir = tmp_path_factory.mktemp("app") / "app"
    assert monai_label.main(["init", str(app_dir), "--bundle", str(ROOT / "bundle")]) == 0
    assert not (app_dir / "bundle" / "models" / "model.pt").exists()
    # MONAI Label's own loader finds the app class in main.py.
    from monailabel.interfaces.utils.app import app_instance

    conf = {"dataset_dir": str(mimic["root"]), "overrides": json.dumps(SMALL)}
    instance = app_instance(str(app_dir), str(mimic["studies"]), conf)
    assert type(instance) is monai_label.ChestXrayLabelApp
    assert set(instance.info()["strategies"]) == {"random", "relabel_queue"}
    return instance


def _save_label(app, image_id: str, findings: list[str], tmp: Path, value: int = 1) -> None:
    path = tmp / f"{image_id}.json"
    path.write_text(json.dumps({findings[1]: value, findings[9]: 1 - value, findings[0]: None}))
    app.datastore().save_label(image_id, str(path), "final", {})


def test_app_retrains_from_final_labels_and_serves_the_queue(app, mimic: dict, tmp_path: Path) -> None:
    from l2v_monai.apps.monai_label import MODEL

    findings, store = mimic["findings"], app.datastore()
    models = app.bundle / "models"
    ids = sorted(store.list_images())
    assert ids == sorted(it["dicom_id"] for it in mimic["datalist"]["training"])
    for image_id in ids[:3]:
        _save_label(app, image_id, findings, tmp_path)

    first = app.train({"model": MODEL, "max_epochs": 1, "device": "cpu"})
    print(f"\nround 1 (from scratch): {first['seconds']} s")
    assert first["started_from"] is None and first["hand_labels"]["imported"] == {"training": 3}
    assert (models / "model.pt").is_file() and (models / "checkpoint.pt").is_file()
    assert not [p for p in models.iterdir() if p.name.startswith(".round")]  # no staging folder left
    # The hand labels reached the items the bundle trained on (its datalist's training split).
    from l2v_monai.data.datalist import read_datalist

    task = app._trainers[MODEL]
    trained_on = {it["dicom_id"]: it for it in read_datalist(task.work_datalist, splits=("training",))["training"]}
    def hand(image_id: str) -> np.ndarray:
        label = trained_on[image_id]["label"]
        return np.full(len(findings), np.nan) if label is None else np.asarray(label, dtype=float)

    for image_id in ids[:3]:
        assert hand(image_id)[1] == 1 and hand(image_id)[9] == 0 and np.isnan(hand(image_id)[0])
    assert all(np.isnan(hand(image_id)).all() for image_id in ids[3:])

    _save_label(app, ids[3], findings, tmp_path, value=0)
    model_1 = _sha(models / "model.pt")
    second = app.train({"model": MODEL, "max_epochs": 1, "device": "cpu"})
    print(f"round 2 (from round 1's model): {second['seconds']} s")
    assert second["started_from"] == model_1  # started from the first round's model
    assert second["hand_labels"]["imported"] == {"training": 4}
    assert _sha(models / "model.pt") == second["model"] != model_1

    # The queue: two different unlabelled images, the ranking computed once for this model.
    strategy = app._strategies["relabel_queue"]
    started = time.monotonic()
    one = app.next_sample({"strategy": "relabel_queue"})
    first_call = time.monotonic() - started
    labelled = set(store.get_labeled_images())
    assert one["id"] not in labelled and one["id"] in ids
    _save_label(app, one["id"], findings, tmp_path)
    started = time.monotonic()
    two = app.next_sample({"strategy": "relabel_queue"})
    cached_call = time.monotonic() - started
    print(f"strategy call: {first_call:.1f} s ranking + pick, then {cached_call * 1000:.1f} ms cached")
    assert two["id"] not in labelled | {one["id"]} and two["id"] != one["id"]
    assert strategy.computed == 1 and two["rank"] > one["rank"]
    # The same order as the relabeling queue's queue.csv for this run and datalist.
    out = tmp_path / "queue"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "relabel_queue.py"), "--datalist", str(task.work_datalist),
                    "--run", str(app.bundle), "--override", "image_size=64", f"dataset_dir={mimic['root']}",
                    "--n", str(len(ids)), "--out", str(out), "--no-sheet"], check=True, capture_output=True)
    with open(out / "queue.csv", newline="") as handle:
        queue = [row["id"] for row in csv.DictReader(handle)]
    assert [image_id for image_id, _ in strategy.ranking()] == queue

    assert app.next_sample({"strategy": "random"})["id"] not in set(store.get_labeled_images())
    for image_id in store.get_unlabeled_images():
        _save_label(app, image_id, findings, tmp_path)
    assert strategy({"strategy": "relabel_queue"}, store) is None
    assert app.next_sample({"strategy": "relabel_queue"}) == {}

    result = app.infer({"model": MODEL, "image": ids[0], "device": "cpu"})
    prediction = result["params"]["prediction"]
    assert [p["label"] for p in prediction] == [f.lower() for f in findings]
    assert all(0.0 <= p["score"] <= 1.0 for p in prediction)


def test_a_failed_round_leaves_the_previous_model_serving(app, mimic: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from l2v_monai.apps.monai_label import MODEL
    from l2v_monai.engine.trainer import LearningToVoteTrainer

    models = app.bundle / "models"
    if not (models / "model.pt").is_file():
        pytest.skip("needs the trained model of the previous test")
    before = {name: _sha(models / name) for name in ("model.pt", "checkpoint.pt")}
    served = app.infer({"model": MODEL, "image": mimic["datalist"]["training"][0]["dicom_id"], "device": "cpu"})
    iteration = LearningToVoteTrainer._iteration

    def second_epoch_fails(self, engine, batch):
        if engine.state.epoch >= 2:  # the first epoch has written its checkpoint and model into the staging folder
            raise RuntimeError("injected failure halfway through the round")
        return iteration(self, engine, batch)

    monkeypatch.setattr(LearningToVoteTrainer, "_iteration", second_epoch_fails)
    with pytest.raises(Exception) as failed:
        app.train({"model": MODEL, "max_epochs": 2, "device": "cpu"})
    causes, error = [], failed.value  # MONAI's config parser wraps the trainer's error
    while error is not None:
        causes.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("injected failure" in text for text in causes)
    monkeypatch.undo()
    assert {name: _sha(models / name) for name in ("model.pt", "checkpoint.pt")} == before
    assert not [p for p in models.iterdir() if p.name.startswith(".round")]
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert state["head.weight"].shape == (14, 2048)
    again = app.infer({"model": MODEL, "image": mimic["datalist"]["training"][0]["dicom_id"], "device": "cpu"})
    assert [p["score"] for p in again["params"]["prediction"]] == pytest.approx([p["score"] for p in served["params"]["prediction"]])
