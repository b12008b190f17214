"""Fixtures shared by the test modules.

Every test keeps its files inside its own temporary folder: the project's derived-data cache
(``L2V_CACHE``) points into a per-session temporary folder, so no test writes under the user's home.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training_runs import EPOCHS, TRAIN, load_all, run_training

ROOT = Path(__file__).resolve().parents[1]
#: Real material beside a development checkout; tests that use it skip cleanly without it.
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _derived_data_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Label-set and embedding caches go to a temporary folder, never to ``~/.cache``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("L2V_CACHE", str(tmp_path_factory.mktemp("l2v_cache")))
    yield
    mp.undo()


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    """A small CIFAR-10 in torchvision's on-disk layout: ``cifar-10-batches-py/`` with five training
    batches of 20 images and a test batch of 20, pickled as dicts of a uint8 ``N × 3072`` array and a
    list of labels, as the python version of CIFAR-10 is. ``first_image.npy`` is the first training image."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (20, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(x) for x in rng.permutation(np.arange(20) % 10)]
        if index == 0:
            np.save(tmp_path / "first_image.npy", data[0].reshape(3, 32, 32))
        (folder / name).write_bytes(pickle.dumps({"batch_label": name, "data": data, "labels": labels}, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}, protocol=2))
    return tmp_path


def _hand_label(root: Path) -> Path:
    """Random 0/1 hand labels for a prepared tree's validation and test images, written as a CSV and
    imported with ``l2v-prepare-mimic hand-labels`` into ``<root>/hand_labelled.json``."""
    import csv
    import json

    from l2v_monai.cli.prepare_mimic import main as prepare_mimic

    datalist = json.loads((root / "datalist.json").read_text())
    rng = np.random.default_rng(0)
    with open(root / "hand.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dicom_id", *datalist["findings"]])
        for item in datalist["test"] + datalist["validation"]:
            writer.writerow([item["dicom_id"], *rng.integers(0, 2, len(datalist["findings"])).tolist()])
    out = root / "hand_labelled.json"
    assert prepare_mimic(["hand-labels", "--csv", str(root / "hand.csv"), "--root", str(root), "--out", str(out)]) == 0
    return out


def _prepared_tree(root: Path) -> dict:
    """A synthetic MIMIC-CXR tree under ``root`` (8 subjects, 2 studies each) and its ``datalist.json``, made
    with ``l2v-prepare-mimic labelers``; returns the tree's facts and the datalist."""
    from l2v_monai.experiments.synthetic_mimic import make_mimic_tree

    info = make_mimic_tree(root, n_subjects=8, studies_per_subject=2)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_mimic.py"), "labelers", "--root", str(root),
                    "--out", str(root / "datalist.json")], check=True, capture_output=True)
    return {"info": info, "datalist": json.loads((root / "datalist.json").read_text())}


@pytest.fixture(scope="session")
def prepare_tree():
    """A function that writes a prepared MIMIC-style tree into a folder (see ``_prepared_tree``)."""
    return _prepared_tree


@pytest.fixture(scope="session")
def hand_label_tree():
    """A function that hand-labels a prepared MIMIC-style tree (``datalist.json`` beside it)."""
    return _hand_label


# --- the fault tests' tree and their uninterrupted reference run (test_faults_resume, test_faults_cluster) ---
@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The synthetic MIMIC tree, its datalist, and an overlay that swaps in the tiny network."""
    root = tmp_path_factory.mktemp("mimic")
    assert len(_prepared_tree(root)["datalist"]["training"]) == 10  # 3 iterations per epoch
    tiny = root / "tiny.json"
    tiny.write_text(json.dumps({"network_def": {"_target_": "tiny_nets.TinyNet", "num_outputs": "$len(@findings)",
                                                "in_channels": 1}}))
    return {"root": root, "configs": [TRAIN, tiny]}


@pytest.fixture(scope="module")
def reference(tree: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 3-epoch run, with the progress bar forced on."""
    out = tmp_path_factory.mktemp("reference")
    log = run_training(tree["configs"], out, tree["root"], "--epochs", str(EPOCHS), "--progress_bar", "True")
    return {"root": out, "log": log, "files": load_all(out / "models")}


# --- the bundle tests' tree (test_bundle, test_bundle_evaluation) ---
@pytest.fixture(scope="module")
def mimic(tmp_path_factory: pytest.TempPathFactory, hand_label_tree) -> dict:
    """A synthetic MIMIC tree, its datalist, a hand-labelled test set and report embeddings."""
    root = tmp_path_factory.mktemp("mimic")
    prepared = _prepared_tree(root)
    info, datalist = prepared["info"], prepared["datalist"]
    hand_label_tree(root)
    from l2v_monai.data.report_embedding import EmbeddingCache, save_embedding_cache

    studies = sorted({it["study_id"] for split in ("training", "validation", "test") for it in datalist[split]})
    save_embedding_cache(
        EmbeddingCache(model="test-vectors", dim=16, pooling="mean", max_length=32,
                       embeddings={s: torch.randn(16) for s in studies}),
        root / "report_embeddings.pt",
    )
    return {"root": root, "info": info, "datalist": datalist}
