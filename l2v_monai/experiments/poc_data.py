"""Proof-of-concept datasets: CIFAR-10, Fashion-MNIST or scikit-learn digits, labelled by simulated annotators.

:func:`load_poc_arrays` reads one split of a dataset by name as ``(images float32 S x C x H x W in
[0, 1], labels int64 S)``. :func:`make_poc_splits` turns a dataset into MONAI-style item lists whose
training labels come from the simulated annotators of :mod:`l2v_monai.experiments.annotators`.

Where clean labels live (they exist only for reporting):

* ``training`` items: ``image``, ``labels`` (M x K one-hot noisy label sets) and ``clean`` (the true
  class index), kept so the report can score the refined training labels (paper Table 2); neither
  the strategy nor the network reads it.
* ``validation`` items: ``image`` and ``labels`` only: no clean key at all. Model and
  hyper-parameter selection therefore sees only noisy labels, as in the paper.
* ``test`` items: ``image``, ``label`` (the clean class one-hot, float32 K) and ``clean`` (its index),
  used once, for the final test accuracy.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from l2v_monai.experiments.annotators import ANNOTATORS, one_hot_label_sets, simulate_labels

__all__ = [
    "CIFAR10_FOLDER",
    "DATASETS",
    "FASHION_MNIST_DIR",
    "load_poc_arrays",
    "make_poc_splits",
    "read_idx",
    "stratified_subset",
]

# Where Debian's ``dataset-fashion-mnist`` package installs the original idx files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# scikit-learn's digits have no official test split; a fixed stratified hold-out (independent of the
# run's seed) keeps the test set the same across runs.
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0

# idx type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class _RawSplit:
    """One split before scaling: integer images ``S x C x H x W``, labels ``S``, the value that maps to 1.0, and K."""

    images: np.ndarray
    labels: np.ndarray
    max_value: float
    num_classes: int = 10  # all three datasets have 10 classes


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST format; ``.gz`` or plain), validating its magic number and size."""
    path = Path(path)
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:  # gzip raises BadGzipFile (an OSError) or EOFError on truncation
        raise ValueError(f"{path}: cannot read idx file ({err})") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise ValueError(f"{path}: not an idx file (bad magic number {data[:4].hex() or 'empty'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: idx header truncated (expected {ndim} dimensions)")
    shape = tuple(int(x) for x in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: idx payload is {len(data) - header} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}; install Debian's dataset-fashion-mnist package "
        f"(it fills {FASHION_MNIST_DIR}) or put the original idx files from "
        "https://github.com/zalandoresearch/fashion-mnist in that directory"
    )


def _read_fashion_mnist(root: str | Path | None, train: bool, download: bool) -> _RawSplit:
    if download:
        raise ValueError("fashion_mnist is read from local idx files and is never downloaded; install dataset-fashion-mnist instead")
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    prefix = "train" if train else "t10k"
    images_path = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images N x H x W, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{labels_path}: expected uint8 labels N, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must lie in 0..9, found {int(labels.max())}")
    return _RawSplit(images[:, None], labels.astype(np.int64), 255.0)


#: torchvision's CIFAR-10 layout: ``<root>/cifar-10-batches-py/`` with five training batches and one test batch.
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_BATCHES = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}
#: What a CIFAR-10 batch pickle may reference: numpy's array reconstruction, nothing else.
_CIFAR10_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR-10 batch file and refuses any other object a pickle could smuggle in."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR10_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"a CIFAR-10 batch may not reference {module}.{name}")
        return super().find_class(module, name)


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as handle:
        try:
            batch = _BatchUnpickler(handle, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise ValueError(f"{path}: not a CIFAR-10 batch file ({err})") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 batch file (holds a {type(batch).__name__}, expected a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels', found {sorted(batch)}")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 N x 3072, got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"{path}: 'labels' must hold {len(data)} classes in 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_cifar10(root: str | Path | None, train: bool, download: bool) -> _RawSplit:
    if root is None:
        raise ValueError("cifar10 needs a root directory (the one holding cifar-10-batches-py)")
    folder = Path(root) / CIFAR10_FOLDER
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=train, download=True)  # fetches, checks its MD5 and unpacks once
    missing = [name for name in _CIFAR10_BATCHES[train] if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found in {folder} (missing {', '.join(missing)}): unpack the python version "
            "(cifar-10-python.tar.gz) there, or pass --download True to fetch it, or run on Fashion-MNIST "
            "with --dataset fashion_mnist --data_root /usr/share/datasets/fashion-mnist"
        )
    parts = [_read_cifar10_batch(folder / name) for name in _CIFAR10_BATCHES[train]]
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    return _RawSplit(images, np.concatenate([p[1] for p in parts]), 255.0)


def _read_digits(root: str | Path | None, train: bool, download: bool) -> _RawSplit:
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    test = stratified_subset(labels, round(len(labels) * _DIGITS_TEST_FRACTION), np.random.default_rng(_DIGITS_SPLIT_SEED))
    keep = np.isin(np.arange(len(labels)), test, invert=train)
    images = digits.images[keep].astype(np.uint8)[:, None]  # values are integers 0..16
    return _RawSplit(images, labels[keep], 16.0)


DATASETS: dict[str, Callable[[str | Path | None, bool, bool], _RawSplit]] = {
    "cifar10": _read_cifar10,
    "fashion_mnist": _read_fashion_mnist,
    "digits": _read_digits,
}


def _read(dataset: str, root: str | Path | None, train: bool, download: bool) -> _RawSplit:
    if dataset not in DATASETS:
        raise ValueError(f"unknown proof-of-concept dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[dataset](root, train, download)


def _scale(images: np.ndarray, max_value: float) -> np.ndarray:
    return images.astype(np.float32) / np.float32(max_value)


def load_poc_arrays(dataset: str, root: str | Path | None = None, train: bool = True, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One split of ``dataset`` as ``(images float32 S x C x H x W in [0, 1], labels int64 S)``.

    ``root``: the directory holding the files (Fashion-MNIST defaults to :data:`FASHION_MNIST_DIR`;
    CIFAR-10 needs one; digits ignores it). Only CIFAR-10 downloads, and only with ``download=True``.
    """
    raw = _read(dataset, root, train, download)
    return _scale(raw.images, raw.max_value), raw.labels


def stratified_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``size`` samples drawn per class in proportion to the class counts (largest remainder)."""
    labels = np.asarray(labels)
    if not 0 <= size <= len(labels):
        raise ValueError(f"subset size {size} must lie in [0, {len(labels)}]")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * size / len(labels) if len(labels) else counts.astype(float)
    take = np.floor(quota).astype(int)
    # Hand the remaining samples to the classes with the largest fractional parts.
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: size - int(take.sum())]] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c, n in zip(classes, take)]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def _limit(raw: _RawSplit, limit: int | None, what: str, dataset: str, rng: np.random.Generator) -> _RawSplit:
    if limit is None:
        return raw
    if int(limit) != limit or limit <= 0:
        raise ValueError(f"{what} must be a positive integer or None, got {limit!r}")
    if limit > len(raw.labels):
        raise ValueError(f"{what}={limit} exceeds the {len(raw.labels)} images of {dataset}'s split; use None for all of them")
    idx = stratified_subset(raw.labels, int(limit), rng)
    return _RawSplit(raw.images[idx], raw.labels[idx], raw.max_value, raw.num_classes)


def make_poc_splits(
    dataset: str,
    root: str | Path | None = None,
    annotators: Sequence[str] = ANNOTATORS,
    noise: float | None = None,
    val_fraction: float = 0.2,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    download: bool = False,
) -> dict[str, Any]:
    """Training / validation / test item lists for the proof of concept (see the module docstring for the keys).

    ``max_train`` and ``max_test`` take seeded, class-stratified subsets of the training and test images;
    ``max_train`` counts the noisy set *before* ``val_fraction`` of it is held out (randomly, without
    looking at clean labels) for validation. ``noise`` rescales the annotators (AD excepted); ``seed``
    fixes the subsets, the simulated labels and the hold-out.
    Also returns ``annotators``, ``num_classes``, ``in_channels`` and ``image_size`` (H, W).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    annotators = list(annotators)
    subset_rng, holdout_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    train = _limit(_read(dataset, root, True, download), max_train, "max_train", dataset, subset_rng)
    test = _limit(_read(dataset, root, False, download), max_test, "max_test", dataset, subset_rng)
    num_classes = train.num_classes

    noisy = one_hot_label_sets(simulate_labels(train.labels, annotators, noise, seed, num_classes), num_classes)
    train_images, test_images = _scale(train.images, train.max_value), _scale(test.images, test.max_value)

    order = holdout_rng.permutation(len(train.labels))
    n_val = int(round(len(order) * val_fraction))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    clean_onehot = np.eye(num_classes, dtype=np.float32)[test.labels]
    return {
        "training": [{"image": train_images[i], "labels": noisy[i], "clean": int(train.labels[i])} for i in train_idx],
        "validation": [{"image": train_images[i], "labels": noisy[i]} for i in val_idx],
        "test": [{"image": test_images[i], "label": clean_onehot[i], "clean": int(test.labels[i])} for i in range(len(test.labels))],
        "annotators": annotators,
        "num_classes": num_classes,
        "in_channels": int(train_images.shape[1]),
        "image_size": tuple(int(x) for x in train_images.shape[2:]),
    }
