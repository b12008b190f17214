"""Fixtures shared by the test modules.

Every test keeps its files inside its own temporary folder: the project's derived-data cache
(``L2V_CACHE``) points into a per-session temporary folder, so no test writes under the user's home.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture(scope="session")
def hand_label_tree():
    """A function that hand-labels a prepared MIMIC-style tree (``datalist.json`` beside it)."""
    return _hand_label
