"""Each finding's AUC and the macro AUC with 95 % intervals, PR-AUC beside them, on a hand-labelled set.

The question a hospital asks: "how good is this model on *our* labelled studies, and how sure are
we?". Per finding: n positive / n negative, ROC-AUC with a percentile bootstrap interval (over
patients when the items carry a patient id, else over studies; seeded; the number of resamples
is reported) and DeLong's interval as a cross-check, and average precision (PR-AUC). A finding
with one class (or none) is "not estimable" with the reason, never NaN in the report.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from l2v_monai.evaluation.auc import skip_reason
from l2v_monai.evaluation.bootstrap import DEFAULT_RESAMPLES, bootstrap_aucs, percentile_interval, resample_plan
from l2v_monai.evaluation.delong import delong_interval
from l2v_monai.evaluation.inputs import as_float_array, check_binary_labels, check_finite_scores, check_matrix

__all__ = ["NOT_ESTIMABLE", "check_inputs", "auc_intervals", "format_interval"]

NOT_ESTIMABLE = "not estimable"


def check_inputs(y_true: Any, y_score: Any, findings: Sequence[str], score_name: str = "y_score") -> tuple[np.ndarray, np.ndarray]:
    """Hand labels (0/1/NaN) and finite scores as matching ``B × N`` float arrays."""
    truth, scores = as_float_array(y_true, "y_true"), as_float_array(y_score, score_name)
    check_matrix(truth, "y_true", findings)
    check_matrix(scores, score_name, findings)
    if truth.shape != scores.shape:
        raise ValueError(f"y_true has shape {truth.shape} but {score_name} has shape {scores.shape}")
    check_binary_labels(truth, "y_true", findings)
    check_finite_scores(scores, score_name, findings)
    return truth, scores


def auc_intervals(
    y_true: Any,
    y_score: Any,
    findings: Sequence[str],
    groups: Sequence[Any] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Per-finding and macro ROC-AUC with bootstrap and DeLong intervals, and average precision.

    Returns ``{"per_finding": {finding: {...}}, "macro": {...}, "bootstrap": {...}}``. Each finding
    holds ``n``, ``positives``, ``negatives``, ``estimable`` and, when estimable, ``auc``,
    ``auc_low``/``auc_high`` (bootstrap), ``delong_low``/``delong_high``, ``ap``; otherwise
    ``reason`` (``"only negatives"``, ...). ``groups`` (one patient id per item) makes the bootstrap
    draw whole patients. The macro AUC is the mean over estimable findings, resampled jointly.
    """
    findings = list(findings)
    truth, scores = check_inputs(y_true, y_score, findings)
    plan = resample_plan(truth.shape[0], groups, n_resamples, seed)
    per_finding: dict[str, dict[str, Any]] = {}
    estimable: list[int] = []
    for col, finding in enumerate(findings):
        present = ~np.isnan(truth[:, col])
        labels, score = truth[present, col], scores[present, col]
        n, positives = int(labels.size), int(labels.sum())
        row: dict[str, Any] = {"n": n, "positives": positives, "negatives": n - positives}
        reason = skip_reason(n, positives)
        if reason:
            row.update(estimable=False, reason=f"{NOT_ESTIMABLE}: {reason}")
        else:
            estimable.append(col)
            _, se, low, high = delong_interval(labels, score, level)
            row.update(
                estimable=True,
                auc=float(roc_auc_score(labels, score)),
                delong_se=se,
                delong_low=low,
                delong_high=high,
                ap=float(average_precision_score(labels, score)),
                prevalence=positives / n,
            )
        per_finding[finding] = row

    macro: dict[str, Any] = {"n_findings": len(estimable), "estimable": bool(estimable)}
    degenerate_total = 0
    if estimable:
        resampled = bootstrap_aucs(truth, [scores], plan, estimable)[0]  # findings × B
        for k, col in enumerate(estimable):
            low, high, degenerate = percentile_interval(resampled[k], level)
            per_finding[findings[col]].update(auc_low=low, auc_high=high, degenerate_resamples=degenerate)
            degenerate_total += degenerate
        # A resample that lost a finding's positives leaves that finding out of its macro mean.
        with warnings.catch_warnings():  # an all-degenerate resample gives NaN, counted below
            warnings.simplefilter("ignore", RuntimeWarning)
            macro_resampled = np.nanmean(np.where(np.isfinite(resampled), resampled, np.nan), axis=0)
        low, high, _ = percentile_interval(macro_resampled, level)
        macro.update(
            auc=float(np.mean([per_finding[findings[c]]["auc"] for c in estimable])),
            auc_low=low,
            auc_high=high,
            ap=float(np.mean([per_finding[findings[c]]["ap"] for c in estimable])),
        )
    else:
        macro["reason"] = f"{NOT_ESTIMABLE}: no finding has both positives and negatives"
    return {
        "per_finding": per_finding,
        "macro": macro,
        "bootstrap": {
            "method": "percentile",
            "level": level,
            "n_resamples": n_resamples,
            "seed": seed,
            "unit": plan.unit,
            "n_units": plan.n_groups,
            "degenerate_resamples": degenerate_total,
        },
    }


def format_interval(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """``"0.812 (0.774–0.850)"``; a missing value is an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{value:.{digits}f} (no interval)"
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"
