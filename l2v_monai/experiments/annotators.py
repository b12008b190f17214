"""Simulated annotators for the proof of concept (the paper's Sec. 4 and Fig. 3, after Tanno et al. 2019).

Five annotator types label a 10-class problem through a confusion matrix ``A`` (row = true class,
column = given class); each noisy label is drawn as ``y_m ~ Categorical(A_m[true])``:

* ``HS`` hammer-spammer, 30% noise: ``0.7·I`` plus the rest spread evenly over the other classes;
* ``SF`` structured flips, 40% noise: each class is confused with one or two fixed others;
* ``OC`` ordered confusion, 50% noise: class ``i`` goes to ``i, i+1, i+2, i+3`` (mod K) w.p. .5/.3/.1/.1;
* ``AD`` adversarial, 100% noise: class ``i`` always goes to ``K-1-i``;
* ``AVG`` the element-wise mean of the four matrices above (55% noise by the definition below; the
  paper's Table 2 prints 45%, which is its mean *accuracy*, ``1 - 0.55``).

The noise level of a matrix is ``1 - mean(diag(A))``: the expected error rate when the classes
are balanced.

Noise sweeps (the paper's Figs. 4-6) rescale HS, SF, OC and AVG to a target level ``ν`` with
:func:`rescale_noise`; AD stays as it is because its noise cannot be tuned. The rule walks a
piecewise-linear path ``I → A → O`` through the annotator's own matrix ``A`` (noise ``ν_A``), where ``O``
is ``A``'s off-diagonal mass renormalised per row (uniform over the other classes for a row with no
off-diagonal mass, e.g. SF's class 6):

* ``ν ≤ ν_A``: ``A' = (1 - s)·I + s·A`` with ``s = ν / ν_A`` (less noise, same pattern of confusions);
* ``ν > ν_A``: ``A' = (1 - t)·A + t·O`` with ``t = (ν - ν_A) / (1 - ν_A)`` (more noise, moved onto the
  classes this annotator already confuses).

Both segments keep every entry in ``[0, 1]`` and every row summing to 1, so every ``ν ∈ [0, 1]`` is
reachable for every annotator, and ``1 - mean(diag(A')) = ν`` exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "ANNOTATORS",
    "CLEAN",
    "confusion_matrix",
    "noise_level",
    "one_hot_label_sets",
    "rescale_noise",
    "simulate_labels",
]

ANNOTATORS: tuple[str, ...] = ("HS", "SF", "OC", "AD", "AVG")

# Not one of the paper's five: the identity "annotator" whose labels are the clean ones, so the
# clean-label upper bound runs through the same config and trainer as every other method.
CLEAN = "CLEAN"
KNOWN_ANNOTATORS: tuple[str, ...] = ANNOTATORS + (CLEAN,)

# Annotators whose matrix the noise knob leaves alone (the paper: "its noise level can not be tuned").
FIXED_NOISE: frozenset[str] = frozenset({"AD", CLEAN})

# Structured flips for K = 10, from Tanno et al.'s Fig. 2: true class -> {given class: probability}.
_SF_FLIPS: dict[int, dict[int, float]] = {
    0: {0: 0.7, 2: 0.3},
    1: {1: 0.6, 9: 0.4},
    2: {0: 0.2, 2: 0.8},
    3: {3: 0.3, 5: 0.7},
    4: {4: 0.3, 5: 0.7},
    5: {3: 0.3, 4: 0.2, 5: 0.5},
    6: {6: 1.0},
    7: {4: 0.4, 7: 0.6},
    8: {0: 0.3, 8: 0.7},
    9: {1: 0.5, 9: 0.5},
}
_SF_CLASSES = 10

# Ordered confusion: probability of giving class i + offset (mod K) for true class i.
_OC_OFFSETS: dict[int, float] = {0: 0.5, 1: 0.3, 2: 0.1, 3: 0.1}

_HS_ACCURACY = 0.7


def noise_level(matrix: np.ndarray) -> float:
    """``1 - mean(diag(A))``: the error rate of an annotator with confusion matrix ``A`` on balanced classes."""
    matrix = _check_matrix(matrix)
    return float(1.0 - np.mean(np.diag(matrix)))


def _check_matrix(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ValueError(f"a confusion matrix must be K x K with K >= 2, got shape {matrix.shape}")
    if (matrix < -1e-12).any() or not np.allclose(matrix.sum(axis=1), 1.0, atol=1e-9):
        raise ValueError("a confusion matrix must have non-negative entries and rows that sum to 1")
    return matrix


def _hammer_spammer(k: int) -> np.ndarray:
    off = (1.0 - _HS_ACCURACY) / (k - 1)
    return _HS_ACCURACY * np.eye(k) + off * (1.0 - np.eye(k))


def _structured_flips(k: int) -> np.ndarray:
    if k != _SF_CLASSES:
        raise ValueError(f"the SF annotator is defined for {_SF_CLASSES} classes only, got num_classes={k}")
    matrix = np.zeros((k, k))
    for true, row in _SF_FLIPS.items():
        for given, p in row.items():
            matrix[true, given] = p
    return matrix


def _ordered_confusion(k: int) -> np.ndarray:
    if k <= max(_OC_OFFSETS):
        raise ValueError(f"the OC annotator needs more than {max(_OC_OFFSETS)} classes, got num_classes={k}")
    matrix = np.zeros((k, k))
    for i in range(k):
        for offset, p in _OC_OFFSETS.items():
            matrix[i, (i + offset) % k] = p
    return matrix


def _adversarial(k: int) -> np.ndarray:
    return np.eye(k)[::-1].copy()


def _paper_matrix(name: str, k: int) -> np.ndarray:
    if name == "HS":
        return _hammer_spammer(k)
    if name == "SF":
        return _structured_flips(k)
    if name == "OC":
        return _ordered_confusion(k)
    if name == "AD":
        return _adversarial(k)
    if name == "AVG":
        return np.mean([_paper_matrix(n, k) for n in ("HS", "SF", "OC", "AD")], axis=0)
    if name == CLEAN:
        return np.eye(k)
    raise ValueError(f"unknown annotator {name!r}; choose from {', '.join(KNOWN_ANNOTATORS)}")


def _off_diagonal_distribution(matrix: np.ndarray) -> np.ndarray:
    """Each row's off-diagonal mass renormalised to 1 (uniform over the other classes where there is none)."""
    k = matrix.shape[0]
    off = matrix * (1.0 - np.eye(k))
    mass = off.sum(axis=1, keepdims=True)
    uniform = (1.0 - np.eye(k)) / (k - 1)
    return np.where(mass > 0, off / np.where(mass > 0, mass, 1.0), uniform)


def rescale_noise(matrix: np.ndarray, noise: float) -> np.ndarray:
    """Move a confusion matrix along the path ``I → A → O`` to noise level ``noise`` (see the module docstring)."""
    matrix = _check_matrix(matrix)
    noise = float(noise)
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must lie in [0, 1], got {noise}")
    k = matrix.shape[0]
    own = noise_level(matrix)
    if abs(noise - own) <= 1e-12:  # the annotator's own level (up to rounding of the diagonal's mean)
        return matrix.copy()
    if noise < own:
        s = noise / own  # own > noise >= 0 here
        out = (1.0 - s) * np.eye(k) + s * matrix
    else:
        t = (noise - own) / (1.0 - own)
        out = (1.0 - t) * matrix + t * _off_diagonal_distribution(matrix)
    # Remove rounding dust so rows sum to exactly 1 for the sampler.
    out = np.clip(out, 0.0, None)
    return out / out.sum(axis=1, keepdims=True)


def confusion_matrix(name: str, num_classes: int = 10, noise: float | None = None) -> np.ndarray:
    """The ``num_classes x num_classes`` confusion matrix of annotator ``name``.

    ``noise=None`` gives the paper's matrix; a number rescales it to that noise level with
    :func:`rescale_noise`, except for AD, which is returned unchanged. SF (and so AVG) exist for
    10 classes only; HS, OC and AD generalise to other ``num_classes``.
    """
    if name not in KNOWN_ANNOTATORS:
        raise ValueError(f"unknown annotator {name!r}; choose from {', '.join(KNOWN_ANNOTATORS)}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    if noise is not None and not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f"noise must lie in [0, 1], got {noise}")
    matrix = _paper_matrix(name, int(num_classes))
    if noise is None or name in FIXED_NOISE:
        return matrix
    return rescale_noise(matrix, noise)


def simulate_labels(
    true: np.ndarray,
    annotators: Sequence[str] = ANNOTATORS,
    noise: float | None = None,
    seed: int = 0,
    num_classes: int = 10,
) -> np.ndarray:
    """Draw each annotator's noisy label for every sample: an ``int64`` array ``S x M`` (M = ``len(annotators)``).

    Each annotator draws from its own random stream keyed by ``(seed, its index in ANNOTATORS)``, so an
    annotator's labels do not change when others are added or removed (the paper's Fig. 5 sweep).
    """
    true = np.asarray(true)
    if true.ndim != 1:
        raise ValueError(f"true labels must be a 1-D array of class indices, got shape {true.shape}")
    if true.size and (not np.issubdtype(true.dtype, np.integer) or true.min() < 0 or true.max() >= num_classes):
        raise ValueError(f"true labels must be integers in [0, {num_classes}); got dtype {true.dtype}, range [{true.min()}, {true.max()}]")
    annotators = list(annotators)
    if not annotators:
        raise ValueError("at least one annotator is needed")
    if len(set(annotators)) != len(annotators):
        raise ValueError(f"annotators must not repeat, got {annotators}")
    out = np.empty((true.size, len(annotators)), dtype=np.int64)
    for j, name in enumerate(annotators):
        cumulative = np.cumsum(confusion_matrix(name, num_classes, noise), axis=1)
        rng = np.random.default_rng([seed, KNOWN_ANNOTATORS.index(name)])
        u = rng.random(true.size)
        # Inverse-CDF sampling: the given class is the first whose cumulative probability exceeds u.
        given = (u[:, None] >= cumulative[true]).sum(axis=1)
        out[:, j] = np.minimum(given, num_classes - 1)  # guards u within rounding of 1.0
    return out


def one_hot_label_sets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``S x M`` class indices → ``float32`` one-hot label sets ``S x M x K`` (the project's label-set contract)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be S x M class indices, got shape {labels.shape}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be integers in [0, {num_classes}); got dtype {labels.dtype}")
    return np.eye(num_classes, dtype=np.float32)[labels]
