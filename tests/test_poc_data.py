"""Proof-of-concept data: idx parsing, the dataset switch, stratified subsets and the noisy splits."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from l2v_monai.experiments.annotators import ANNOTATORS
from l2v_monai.experiments.poc_data import FASHION_MNIST_DIR, load_poc_arrays, make_poc_splits, read_idx, stratified_subset

DIGITS_TRAIN, DIGITS_TEST = 1438, 359  # sklearn's 1797 digits with a fixed 20% stratified hold-out


def _write_idx(path: Path, array: np.ndarray, type_code: int = 0x08, gz: bool = True) -> Path:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(payload)
    return path


def _fashion_dir() -> Path:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed in {FASHION_MNIST_DIR}")
    return FASHION_MNIST_DIR


def test_read_idx_round_trips_gzip_and_plain(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(_write_idx(tmp_path / "a.gz", images)), images)
    ints = np.array([-5, 70000], dtype=np.int32)
    out = read_idx(_write_idx(tmp_path / "b", ints, type_code=0x0C, gz=False))
    assert out.dtype == np.int32 and out.tolist() == [-5, 70000]


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(bytes([0, 1, 8, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(ValueError, match="bad-magic: not an idx file"):
        read_idx(bad_magic)
    truncated = tmp_path / "short.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(4))
    with pytest.raises(ValueError, match="short.gz: idx payload is 4 bytes, expected 10"):
        read_idx(truncated)
    not_gzip = tmp_path / "plain.gz"
    not_gzip.write_bytes(b"hello")
    with pytest.raises(ValueError, match="plain.gz: cannot read idx file"):
        read_idx(not_gzip)


def test_fashion_mnist_from_the_debian_directory() -> None:
    root = _fashion_dir()
    x, y = load_poc_arrays("fashion_mnist", root)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    xt, yt = load_poc_arrays("fashion_mnist", root, train=False)
    assert xt.shape == (10000, 1, 28, 28) and yt.shape == (10000,)
    assert yt.min() == 0 and yt.max() == 9


def test_fashion_mnist_errors_name_the_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"train-images-idx3-ubyte.*not found in {tmp_path}"):
        load_poc_arrays("fashion_mnist", tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 2, 2), dtype=np.uint8))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(2, dtype=np.uint8))
    with pytest.raises(ValueError, match="holds 3 images but .*train-labels-idx1-ubyte.gz holds 2 labels"):
        load_poc_arrays("fashion_mnist", tmp_path)


def test_tiny_fashion_mnist_directory_parses(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = np.tile(np.arange(10, dtype=np.uint8), 2)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images, gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    x, y = load_poc_arrays("fashion_mnist", tmp_path, train=False)
    np.testing.assert_allclose(x[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)


def test_digits_split_is_fixed_and_scaled() -> None:
    x, y = load_poc_arrays("digits")
    xt, yt = load_poc_arrays("digits", train=False)
    assert x.shape == (DIGITS_TRAIN, 1, 8, 8) and xt.shape == (DIGITS_TEST, 1, 8, 8)
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(yt).min() >= 35  # stratified: every class in the hold-out
    np.testing.assert_array_equal(load_poc_arrays("digits", train=False)[1], yt)


def test_stratified_subset() -> None:
    labels = np.repeat(np.arange(3), [50, 30, 20])
    idx = stratified_subset(labels, 10, np.random.default_rng(0))
    assert len(idx) == 10 and len(np.unique(idx)) == 10 and (np.diff(idx) > 0).all()
    assert np.bincount(labels[idx]).tolist() == [5, 3, 2]
    assert len(stratified_subset(labels, 7, np.random.default_rng(0))) == 7  # remainders handed out
    np.testing.assert_array_equal(idx, stratified_subset(labels, 10, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="subset size 101"):
        stratified_subset(labels, 101, np.random.default_rng(0))


def test_splits_keys_proportions_and_no_clean_in_validation() -> None:
    splits = make_poc_splits("digits", seed=1)
    train, val, test = splits["training"], splits["validation"], splits["test"]
    assert len(val) == round(0.2 * DIGITS_TRAIN) and len(train) + len(val) == DIGITS_TRAIN
    assert len(test) == DIGITS_TEST
    assert splits["annotators"] == list(ANNOTATORS)
    assert (splits["num_classes"], splits["in_channels"], splits["image_size"]) == (10, 1, (8, 8))
    assert set(train[0]) == {"image", "labels", "clean"}
    assert set(val[0]) == {"image", "labels"}  # selection may only see noisy labels
    assert set(test[0]) == {"image", "label", "clean"}
    assert train[0]["image"].shape == (1, 8, 8) and train[0]["labels"].shape == (5, 10)
    assert train[0]["labels"].dtype == np.float32 and (train[0]["labels"].sum(axis=1) == 1).all()
    assert test[0]["label"].dtype == np.float32 and test[0]["label"].argmax() == test[0]["clean"]
    # The noisy labels are the simulated ones for the clean class; AD is the anti-diagonal.
    clean = np.array([it["clean"] for it in train])
    labels = np.stack([it["labels"] for it in train]).argmax(axis=2)
    np.testing.assert_array_equal(labels[:, 3], 9 - clean)
    hs_accuracy = (labels[:, 0] == clean).mean()
    assert abs(hs_accuracy - 0.7) < 4 * np.sqrt(0.21 / len(clean))


def test_splits_are_seeded_and_follow_the_knobs() -> None:
    a = make_poc_splits("digits", annotators=["HS", "AD"], noise=0.1, max_train=500, max_test=100, seed=2)
    b = make_poc_splits("digits", annotators=["HS", "AD"], noise=0.1, max_train=500, max_test=100, seed=2)
    for split in ("training", "validation", "test"):
        for x, y in zip(a[split], b[split]):
            np.testing.assert_array_equal(x["image"], y["image"])
            np.testing.assert_array_equal(x.get("labels", x.get("label")), y.get("labels", y.get("label")))
    assert len(a["training"]) == 400 and len(a["validation"]) == 100 and len(a["test"]) == 100
    assert np.bincount([it["clean"] for it in a["test"]]).tolist() == [10] * 10
    assert a["training"][0]["labels"].shape == (2, 10)
    clean = np.array([it["clean"] for it in a["training"]])
    hs = np.stack([it["labels"] for it in a["training"]])[:, 0].argmax(axis=1)
    assert (hs != clean).mean() < 0.2  # noise=0.1 applied to HS
    c = make_poc_splits("digits", annotators=["HS", "AD"], noise=0.1, max_train=500, max_test=100, seed=3)
    assert [it["clean"] for it in c["training"]] != [it["clean"] for it in a["training"]]


def test_split_items_collate_into_the_batch_contract() -> None:
    from monai.data import DataLoader, Dataset

    splits = make_poc_splits("digits", max_train=40, max_test=20)
    batch = next(iter(DataLoader(Dataset(splits["training"]), batch_size=8)))
    assert tuple(batch["image"].shape) == (8, 1, 8, 8) and tuple(batch["labels"].shape) == (8, 5, 10)
    assert batch["clean"].shape == (8,)


def test_bad_arguments_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown proof-of-concept dataset 'mnist'"):
        make_poc_splits("mnist")
    with pytest.raises(ValueError, match=f"max_train=16000 exceeds the {DIGITS_TRAIN} images of digits"):
        make_poc_splits("digits", max_train=16000)
    with pytest.raises(ValueError, match="val_fraction"):
        make_poc_splits("digits", val_fraction=1.0)
    with pytest.raises(ValueError, match="max_test must be a positive integer"):
        make_poc_splits("digits", max_test=0)


def test_cifar10_absent_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"CIFAR-10 not found in {tmp_path}.*--download True.*--dataset fashion_mnist"):
        make_poc_splits("cifar10", root=tmp_path)
    with pytest.raises(ValueError, match="cifar10 needs a root directory"):
        load_poc_arrays("cifar10")


def test_cifar10_reads_torchvisions_layout(cifar10_root: Path) -> None:
    """Five training batches and a test batch, pickled as the python version of CIFAR-10 is."""
    images, labels = load_poc_arrays("cifar10", cifar10_root, train=True)
    assert images.shape == (5 * 20, 3, 32, 32) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    # The first pixel rows are the batch's own first 32 bytes (channel-major, row-major, as CIFAR stores them).
    first = np.load(cifar10_root / "first_image.npy")
    np.testing.assert_allclose(images[0], first.astype(np.float32) / 255.0)
    test_images, test_labels = load_poc_arrays("cifar10", cifar10_root, train=False)
    assert test_images.shape == (20, 3, 32, 32) and set(test_labels) <= set(range(10))
    splits = make_poc_splits("cifar10", cifar10_root, max_train=60, max_test=20, seed=0)
    assert splits["in_channels"] == 3 and splits["image_size"] == (32, 32)


def test_cifar10_batch_refuses_foreign_objects(cifar10_root: Path) -> None:
    """A batch file is a pickle: anything beyond numpy arrays, lists and dicts is refused, naming the file."""
    import os
    import pickle

    bad = cifar10_root / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps({"data": os.system, "labels": []}))
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 batch file .*posix.system|test_batch: not a CIFAR-10 batch file"):
        load_poc_arrays("cifar10", cifar10_root, train=False)


def test_fashion_mnist_splits_stratify_the_subsets() -> None:
    root = _fashion_dir()
    splits = make_poc_splits("fashion_mnist", root, max_train=1000, max_test=200, seed=0)
    assert len(splits["training"]) == 800 and len(splits["validation"]) == 200
    assert splits["image_size"] == (28, 28) and splits["in_channels"] == 1
    train_clean = [it["clean"] for it in splits["training"]]
    assert np.bincount([it["clean"] for it in splits["test"]]).tolist() == [20] * 10
    assert sorted(set(train_clean)) == list(range(10))
    image = splits["validation"][0]["image"]
    assert image.shape == (1, 28, 28) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
