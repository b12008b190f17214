"""Is run B better than run A on our hand-labelled items? Paired ΔAUC per finding and for the macro AUC.

Both runs scored the same items, so their AUCs are correlated and must be compared paired:

* per finding, ``method="delong"`` (default): DeLong's paired test and its Wald interval;
  ``method="bootstrap"``: the paired percentile bootstrap (both runs on the same resamples);
* the macro AUC always uses the paired bootstrap (DeLong's covariance does not cover a mean over
  findings whose positives differ), over patients when the items carry a patient id;
* Holm's step-down correction across the findings of one pair controls the family-wise error.

With more than two runs, each later run is compared to the first (the reference).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from l2v_monai.evaluation.auc import skip_reason
from l2v_monai.evaluation.bootstrap import DEFAULT_RESAMPLES, bootstrap_aucs, percentile_interval, resample_plan
from l2v_monai.evaluation.delong import delong_paired_test
from l2v_monai.evaluation.intervals import NOT_ESTIMABLE, check_inputs

__all__ = ["METHODS", "holm", "bootstrap_p_value", "compare_runs"]

METHODS = ("delong", "bootstrap")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values (same order as given): ``max_{j<=i} min(1, (m - j + 1) p_(j))`` over sorted p."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="mergesort")
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(adjusted)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided p of "no difference" from resampled differences: twice the smaller tail beyond 0.

    Floored at ``1 / (B + 1)``: a finite bootstrap cannot show a p smaller than that.
    """
    d = differences[np.isfinite(differences)]
    if d.size == 0:
        return math.nan
    tail = min(np.mean(d <= 0), np.mean(d >= 0))
    return float(min(1.0, max(2.0 * tail, 1.0 / (d.size + 1))))


def compare_runs(
    y_true: Any,
    runs: Mapping[str, Any],
    findings: Sequence[str],
    groups: Sequence[Any] | None = None,
    method: str = "delong",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired comparison of each run against the first in ``runs`` (``{name: B × N scores}``).

    Returns ``{"reference", "method", "bootstrap": {...}, "pairs": [{"run", "per_finding": {...},
    "macro": {...}}]}``; each finding holds ``auc_a``, ``auc_b``, ``difference`` (b − a), ``low``,
    ``high``, ``p_value`` and ``p_holm``, or ``estimable: False`` and the reason.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    names = list(runs)
    if len(names) < 2:
        raise ValueError(f"a comparison needs at least two runs, got {names}")
    findings = list(findings)
    truth = None
    scores: list[np.ndarray] = []
    for name in names:
        truth, matrix = check_inputs(y_true, runs[name], findings, score_name=f"scores of {name!r}")
        scores.append(matrix)
    assert truth is not None
    plan = resample_plan(truth.shape[0], groups, n_resamples, seed)
    estimable = [c for c in range(len(findings)) if not skip_reason(int((~np.isnan(truth[:, c])).sum()),
                                                                     int(np.nansum(truth[:, c])))]
    resampled = bootstrap_aucs(truth, scores, plan, estimable) if estimable else None  # runs × findings × B

    pairs = []
    for b in range(1, len(names)):
        per_finding: dict[str, dict[str, Any]] = {}
        for col, finding in enumerate(findings):
            present = ~np.isnan(truth[:, col])
            labels = truth[present, col]
            reason = skip_reason(int(labels.size), int(labels.sum()))
            row: dict[str, Any] = {"n": int(labels.size), "positives": int(labels.sum())}
            if reason:
                row.update(estimable=False, reason=f"{NOT_ESTIMABLE}: {reason}")
            else:
                test = delong_paired_test(labels, scores[0][present, col], scores[b][present, col], level)
                row.update(estimable=True, auc_a=test.auc_a, auc_b=test.auc_b, difference=test.difference)
                if method == "delong":
                    row.update(low=test.low, high=test.high, p_value=test.p_value)
                else:
                    assert resampled is not None
                    diffs = resampled[b, estimable.index(col)] - resampled[0, estimable.index(col)]
                    low, high, _ = percentile_interval(diffs, level)
                    row.update(low=low, high=high, p_value=bootstrap_p_value(diffs))
            per_finding[finding] = row
        tested = [f for f in findings if per_finding[f]["estimable"]]
        for finding, adjusted in zip(tested, holm([per_finding[f]["p_value"] for f in tested])):
            per_finding[finding]["p_holm"] = adjusted

        macro: dict[str, Any] = {"n_findings": len(tested), "estimable": bool(tested)}
        if tested and resampled is not None:
            with warnings.catch_warnings():  # an all-degenerate resample gives NaN, left out of the interval
                warnings.simplefilter("ignore", RuntimeWarning)
                macro_a = np.nanmean(resampled[0], axis=0)
                macro_b = np.nanmean(resampled[b], axis=0)
            diffs = macro_b - macro_a
            low, high, _ = percentile_interval(diffs, level)
            auc_a = float(np.mean([per_finding[f]["auc_a"] for f in tested]))
            auc_b = float(np.mean([per_finding[f]["auc_b"] for f in tested]))
            macro.update(auc_a=auc_a, auc_b=auc_b, difference=auc_b - auc_a, low=low, high=high,
                         p_value=bootstrap_p_value(diffs), method="paired bootstrap")
        else:
            macro["reason"] = f"{NOT_ESTIMABLE}: no finding has both positives and negatives"
        pairs.append({"run_a": names[0], "run_b": names[b], "per_finding": per_finding, "macro": macro})
    return {
        "reference": names[0],
        "runs": names,
        "method": "DeLong paired test" if method == "delong" else "paired percentile bootstrap",
        "correction": "Holm across findings, per pair",
        "level": level,
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "unit": plan.unit, "n_units": plan.n_groups},
        "pairs": pairs,
    }
