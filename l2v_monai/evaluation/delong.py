"""DeLong's variance of an AUC, its interval, and DeLong's paired test of two AUCs on the same items.

DeLong, DeLong & Clarke-Pearson (Biometrics 1988): the AUC is a Mann-Whitney statistic, its
variance is estimated from the *structural components* ``V10(x_i)`` (the share of negatives a
positive outranks) and ``V01(y_j)`` (the share of positives that outrank a negative). For several
models scored on the same items the components give a covariance matrix, hence a paired z-test of
the difference. The components are computed from midranks (Sun & Xu, IEEE SPL 2014) in
``O(n log n)``, not from the ``m × n`` pair matrix. It is the cross-check of the bootstrap
interval for single AUCs and the per-finding paired test of ``l2v-compare``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

__all__ = ["structural_components", "delong_interval", "delong_paired_test", "DeLongTest"]


def structural_components(labels: np.ndarray, scores: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(aucs, V10, V01)`` for each score vector: ``V10`` is ``models × positives``, ``V01`` ``models × negatives``.

    ``V10[k, i] = mean_j psi(x_i, y_j)`` and ``V01[k, j] = mean_i psi(x_i, y_j)`` with ``psi`` 1 when the
    positive outranks the negative, 1/2 on a tie, 0 otherwise; each model's AUC is the mean of either.
    """
    labels = np.asarray(labels).astype(bool)
    m, n = int(labels.sum()), int((~labels).sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong needs positives and negatives; got {m} positive(s) and {n} negative(s)")
    v10 = np.empty((len(scores), m))
    v01 = np.empty((len(scores), n))
    for k, score in enumerate(scores):
        score = np.asarray(score, dtype=np.float64)
        x, y = score[labels], score[~labels]
        combined = rankdata(np.r_[x, y])
        # rank among all minus rank among one's own class = how many of the other class lie below (ties 1/2).
        v10[k] = (combined[:m] - rankdata(x)) / n
        v01[k] = 1.0 - (combined[m:] - rankdata(y)) / m
    return v10.mean(axis=1), v10, v01


def _covariance(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    """DeLong's ``S = S10 / m + S01 / n`` (models × models)."""
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((v10.shape[0],) * 2)
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((v01.shape[0],) * 2)
    return s10 / m + s01 / n


def delong_interval(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """``(auc, standard error, low, high)``: the Wald interval ``auc ± z·se`` clipped to [0, 1] (as pROC does)."""
    aucs, v10, v01 = structural_components(labels, [scores])
    se = math.sqrt(max(float(_covariance(v10, v01)[0, 0]), 0.0))
    z = float(norm.ppf(0.5 + level / 2.0))
    auc = float(aucs[0])
    return auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se)


@dataclass(frozen=True)
class DeLongTest:
    """The paired test of ``auc_b - auc_a`` on the same items."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    low: float
    high: float
    z: float
    p_value: float


def delong_paired_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95) -> DeLongTest:
    """DeLong's paired z-test of ``AUC_b - AUC_a``, with its Wald interval; two-sided p-value.

    When both models rank every pair alike the difference has zero variance: p is 1 for a zero
    difference (they are the same ranking), not 0/0.
    """
    aucs, v10, v01 = structural_components(labels, [scores_a, scores_b])
    cov = _covariance(v10, v01)
    diff = float(aucs[1] - aucs[0])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    half = float(norm.ppf(0.5 + level / 2.0)) * se
    if se > 0:
        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    else:
        z, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    return DeLongTest(float(aucs[0]), float(aucs[1]), diff, se, diff - half, diff + half, z, p)
