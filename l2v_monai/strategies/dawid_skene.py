"""Dawid–Skene (1979), fitted with crowd-kit: the one fit behind the ``dawid_skene`` strategy, the
label-set quality report and the relabeling queue.

Multi-label sets are fitted one finding at a time on binary labels (a soft label counts as 1 from
0.5 up), which gives every set a 2 × 2 confusion matrix per finding: its sensitivity
``P(set says 1 | y = 1)`` and specificity ``P(set says 0 | y = 0)``, the finding's prevalence and
each item's posterior ``P(y = 1 | labels)``. One-hot sets are fitted once over their classes.
crowd-kit (the ``[baselines]`` extra) is imported only when something is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l2v_monai.extras import import_extra

__all__ = ["BinaryFit", "binarize", "fit_binary", "fit_classes"]


@dataclass(frozen=True)
class BinaryFit:
    """Dawid–Skene's view of ``S`` items × ``M`` sets × ``N`` findings (NaN where it has nothing to say)."""

    sensitivity: np.ndarray  # M × N, P(set says 1 | y = 1)
    specificity: np.ndarray  # M × N, P(set says 0 | y = 0)
    prevalence: np.ndarray  # N, P(y = 1)
    posterior: np.ndarray  # S × N, P(y = 1 | the sets' labels); NaN for items no set labels


def binarize(labels: np.ndarray) -> np.ndarray:
    """Labels as 0/1 floats (soft labels cut at 0.5), NaN kept."""
    labels = np.asarray(labels, dtype=np.float64)
    return np.where(np.isnan(labels), np.nan, (labels >= 0.5).astype(np.float64))


def _crowdkit_dawid_skene() -> type:
    module = import_extra("crowdkit.aggregation", "baselines", "Dawid–Skene (crowd-kit)")
    return module.DawidSkene


def fit_classes(
    tasks: np.ndarray, workers: np.ndarray, values: np.ndarray, n_iter: int = 100, tol: float = 1e-5
) -> object:
    """crowd-kit's fitted ``DawidSkene`` on ``(task, worker, label)`` triples (integer labels).

    Its ``probas_`` are tasks × label values; its ``errors_`` rows are (worker, label given), its
    columns the true label, and a label a worker never gave is absent.
    """
    model = _crowdkit_dawid_skene()(n_iter=n_iter, tol=tol)
    import pandas as pd  # a dependency of crowd-kit, so present once crowd-kit is

    return model.fit(pd.DataFrame({"task": tasks, "worker": workers, "label": values}))


def fit_binary(labels: np.ndarray, n_iter: int = 100, tol: float = 1e-5) -> BinaryFit:
    """Fit binary Dawid–Skene per finding on ``labels`` (S × M × N, NaN = no label).

    A finding on which every label says the same value has one class only: its prevalence is 0
    (or 1), its posterior that value, the sets' specificity 1 (sensitivity 1) and the other rate
    undefined (NaN). A set that labels no item of a finding gets NaN there.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 3:
        raise ValueError(f"label sets must be items × sets × findings, got shape {labels.shape}")
    labels = binarize(labels)
    s, m, n = labels.shape
    sensitivity = np.full((m, n), np.nan)
    specificity = np.full((m, n), np.nan)
    prevalence = np.full(n, np.nan)
    posterior = np.full((s, n), np.nan)
    for j in range(n):
        items, sets = np.nonzero(~np.isnan(labels[:, :, j]))
        if not len(items):
            continue
        values = labels[items, sets, j].astype(int)
        present = np.unique(sets)
        if len(np.unique(values)) == 1:
            only = int(values[0])
            prevalence[j] = float(only)
            posterior[np.unique(items), j] = float(only)
            (sensitivity if only else specificity)[present, j] = 1.0
            continue
        model = fit_classes(items, sets, values, n_iter=n_iter, tol=tol)
        import pandas as pd  # present: crowd-kit just ran

        errors = model.errors_.reindex(pd.MultiIndex.from_product([present, [0, 1]]), fill_value=0.0)
        sensitivity[present, j] = errors[1].to_numpy().reshape(-1, 2)[:, 1]
        specificity[present, j] = errors[0].to_numpy().reshape(-1, 2)[:, 0]
        prevalence[j] = float(model.priors_.get(1, 0.0))
        proba = model.probas_
        posterior[proba.index.to_numpy(dtype=int), j] = proba[1].to_numpy()
    return BinaryFit(sensitivity, specificity, prevalence, posterior)
