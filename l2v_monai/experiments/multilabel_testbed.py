"""A multi-label testbed with a known truth, built the way MIMIC-CXR's label sets arise.

Images are synthetic (seeded) 1×S×S pictures in which each of N findings is a fixed pattern
drawn with a per-sample *visibility*; a negative image may carry a *look-alike* of a finding
(a different pattern of similar size at the same place). Two "report labelers" (think NegBio and
CheXpert) read each image's truth through their own sensitivity:

* a positive finding is mentioned as positive when clearly visible, as *uncertain* when faint
  and missed (negative) when almost invisible — with labeler-specific thresholds;
* a negative finding is mentioned as *uncertain* when a look-alike is strong, and otherwise
  negative, with a small labeler-specific false-positive rate.

Each labeler's uncertain mentions are then mapped to 0 and to 1, giving four label sets
``A_u0, A_u1, B_u0, B_u1``. On a faint positive the ``u1`` sets are right and the ``u0`` sets
wrong; on a look-alike negative it is the other way round. So every per-annotator method
(majority vote, Dawid–Skene, confusion matrices) must be wrong on one of the two kinds of
uncertain sample, while a vote that looks at the sample can be right on both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LABEL_SETS", "make_multilabel_testbed"]

LABEL_SETS = ("A_u0", "A_u1", "B_u0", "B_u1")


def _patterns(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """N finding patterns and N look-alikes: smooth blobs with different textures, at N places."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    real, fake = [], []
    centres = rng.uniform(0.25, 0.75, size=(n, 2))
    for i in range(n):
        cy, cx = centres[i]
        blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.09**2)))
        angle = rng.uniform(0, np.pi)
        stripes = 0.5 + 0.5 * np.cos(2 * np.pi * 6 * (np.cos(angle) * xx + np.sin(angle) * yy))
        real.append(blob * stripes)
        # The look-alike: same place and size, the orthogonal texture.
        stripes2 = 0.5 + 0.5 * np.cos(2 * np.pi * 6 * (np.cos(angle + np.pi / 2) * xx + np.sin(angle + np.pi / 2) * yy))
        fake.append(blob * stripes2)
    return np.stack(real).astype(np.float32), np.stack(fake).astype(np.float32)


def _labeler(
    rng: np.random.Generator,
    truth: np.ndarray,
    visibility: np.ndarray,
    lookalike: np.ndarray,
    miss_below: float,
    certain_above: float,
    doubt_above: float,
    false_positive: float,
) -> np.ndarray:
    """Mentions in {1, 0, −1 (uncertain)} from the truth and what the image shows."""
    jitter = rng.normal(0, 0.05, size=truth.shape)
    v = visibility + jitter
    out = np.zeros(truth.shape, dtype=np.float32)
    pos = truth == 1
    out[pos & (v >= certain_above)] = 1
    out[pos & (v >= miss_below) & (v < certain_above)] = -1
    neg = ~pos
    out[neg & (lookalike + jitter >= doubt_above)] = -1
    out[neg & (out == 0) & (rng.random(truth.shape) < false_positive)] = 1
    return out


def make_multilabel_testbed(
    n_train: int = 6000,
    n_test: int = 2000,
    num_findings: int = 5,
    image_size: int = 28,
    prevalence: float = 0.3,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Seeded images, four label sets and the truth, split like the proof of concept.

    Returns a dict with ``training``/``validation`` items (``image`` 1×S×S float32, ``labels``
    4×N float32 in {0, 1}; training items also carry ``truth`` for reporting only), ``test``
    items (``image``, ``label`` = the truth), ``label_sets``, ``findings`` and the raw mentions.
    """
    rng = np.random.default_rng(seed)
    real, fake = _patterns(np.random.default_rng(12345), num_findings, image_size)
    n = n_train + n_test
    truth = (rng.random((n, num_findings)) < prevalence).astype(np.float32)
    visibility = np.where(truth == 1, rng.uniform(0.05, 1.0, truth.shape), 0.0).astype(np.float32)
    # A look-alike appears on a third of the negatives, with a random strength.
    lookalike = np.where((truth == 0) & (rng.random(truth.shape) < 0.35), rng.uniform(0.05, 1.0, truth.shape), 0.0)
    lookalike = lookalike.astype(np.float32)
    background = rng.normal(0.0, 0.08, size=(n, image_size, image_size)).astype(np.float32)
    images = 0.2 + background + np.einsum("sn,nhw->shw", visibility, real) + np.einsum("sn,nhw->shw", lookalike, fake)
    images = np.clip(images, 0.0, 1.0)[:, None].astype(np.float32)

    # Labeler A is the more sensitive reader and doubts more look-alikes; B is more conservative.
    a = _labeler(rng, truth, visibility, lookalike, miss_below=0.15, certain_above=0.5, doubt_above=0.45, false_positive=0.02)
    b = _labeler(rng, truth, visibility, lookalike, miss_below=0.25, certain_above=0.65, doubt_above=0.6, false_positive=0.01)
    sets = np.stack([np.where(a == -1, 0, a), np.where(a == -1, 1, a), np.where(b == -1, 0, b), np.where(b == -1, 1, b)], axis=1)
    sets = sets.astype(np.float32)

    order = rng.permutation(n_train)
    n_val = int(round(val_fraction * n_train))
    val_idx, train_idx = order[:n_val], order[n_val:]
    test_idx = np.arange(n_train, n)
    return {
        "training": [{"image": images[i], "labels": sets[i], "truth": truth[i]} for i in train_idx],
        "validation": [{"image": images[i], "labels": sets[i]} for i in val_idx],
        "test": [{"image": images[i], "label": truth[i]} for i in test_idx],
        "label_sets": list(LABEL_SETS),
        "findings": [f"finding_{j}" for j in range(num_findings)],
        "mentions": {"A": a[:n_train], "B": b[:n_train]},
        "truth": truth[:n_train],
    }
