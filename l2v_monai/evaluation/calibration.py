"""Can a probability of 0.3 be read as "3 in 10 of such studies have the finding" here? Calibration.

Per finding: the Brier score, the expected calibration error (ECE: equal-width bins, the
bin-size-weighted mean of |observed rate − mean probability|) and the reliability curve
(scikit-learn's ``calibration_curve``). A model trained elsewhere is often miscalibrated on a new
hospital's case mix, so a recalibration can be fitted on the local hand labels: Platt
(logistic on the logit), temperature (one scale on the logit) or isotonic (scikit-learn's
``IsotonicRegression``). Platt and temperature keep the ranking, so AUC is unchanged; isotonic may
merge ties. The fitted maps are saved with the bundle (``bundle_scripts.decisions``) and applied at
inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from l2v_monai.bundle_scripts.decisions import CALIBRATION_METHODS, logit, calibrate
from l2v_monai.evaluation.auc import skip_reason
from l2v_monai.evaluation.intervals import NOT_ESTIMABLE, check_inputs

__all__ = ["DEFAULT_BINS", "expected_calibration_error", "calibration_summary", "fit_map", "fit_calibration", "calibrate"]

DEFAULT_BINS = 10


def _check_probabilities(scores: np.ndarray, findings: Sequence[str]) -> None:
    bad = (scores < 0) | (scores > 1)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"scores[row {row}, {findings[col]!r}] = {scores[row, col]:g}: calibration needs probabilities in [0, 1]")


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1] (the last bin includes 1)."""
    bins = np.minimum((probabilities * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    observed = np.bincount(bins, weights=labels, minlength=n_bins)
    predicted = np.bincount(bins, weights=probabilities, minlength=n_bins)
    filled = counts > 0
    return float(np.sum(np.abs(observed[filled] - predicted[filled])) / labels.size)


def calibration_summary(y_true: Any, y_prob: Any, findings: Sequence[str], n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Per finding ``{"brier", "ece", "curve": {"predicted", "observed"}}`` or ``{"reason"}`` when not estimable."""
    findings = list(findings)
    truth, scores = check_inputs(y_true, y_prob, findings, score_name="probabilities")
    _check_probabilities(scores, findings)
    out: dict[str, Any] = {}
    for col, finding in enumerate(findings):
        present = ~np.isnan(truth[:, col])
        labels, p = truth[present, col], scores[present, col]
        reason = skip_reason(int(labels.size), int(labels.sum()))
        if reason == "no labels":
            out[finding] = {"estimable": False, "reason": f"{NOT_ESTIMABLE}: {reason}"}
            continue
        # Brier and ECE are defined with one class too; the curve needs at least a filled bin, which it has.
        observed, predicted = calibration_curve(labels, p, n_bins=n_bins, strategy="uniform")
        out[finding] = {
            "estimable": True,
            "n": int(labels.size),
            "brier": float(brier_score_loss(labels, p, pos_label=1)) if reason is None else float(np.mean((p - labels) ** 2)),
            "ece": expected_calibration_error(labels, p, n_bins),
            "curve": {"predicted": predicted.tolist(), "observed": observed.tolist()},
        }
    return out


def fit_map(method: str, labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Fit one finding's map (parameters as saved in ``calibration.json``)."""
    z = logit(probabilities)
    if method == "platt":
        # scikit-learn's default L2 penalty (C = 1): on a few hundred items it is nearly the maximum-likelihood
        # fit, and on a tiny or separable set it keeps the slope finite instead of a step from 0 to 1.
        model = LogisticRegression(C=1.0, max_iter=1000).fit(z[:, None], labels)
        return {"a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}
    if method == "temperature":
        def nll(log_t: float) -> float:
            q = np.clip(1.0 / (1.0 + np.exp(-z / np.exp(log_t))), 1e-12, 1 - 1e-12)
            return float(-np.mean(labels * np.log(q) + (1 - labels) * np.log(1 - q)))

        result = minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded")
        return {"temperature": float(np.exp(result.x))}
    if method == "isotonic":
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probabilities, labels)
        return {"x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
    raise ValueError(f"unknown calibration method {method!r} (known: {CALIBRATION_METHODS})")


def fit_calibration(y_true: Any, y_prob: Any, findings: Sequence[str], method: str) -> dict[str, Any]:
    """Fit ``method`` per finding on the hand labels; a finding with one class keeps its probabilities (map ``None``).

    Returns a calibration document (what ``save_calibration`` writes) with ``skipped`` reasons.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r} (known: {', '.join(CALIBRATION_METHODS)})")
    findings = list(findings)
    truth, scores = check_inputs(y_true, y_prob, findings, score_name="probabilities")
    _check_probabilities(scores, findings)
    maps: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for col, finding in enumerate(findings):
        present = ~np.isnan(truth[:, col])
        labels = truth[present, col]
        reason = skip_reason(int(labels.size), int(labels.sum()))
        if reason:
            maps[finding], skipped[finding] = None, f"{NOT_ESTIMABLE}: {reason}"
        else:
            maps[finding] = fit_map(method, labels, scores[present, col])
    return {"format": "l2v-calibration/1", "method": method, "findings": findings, "maps": maps,
            "skipped": skipped, "fitted_on": {"n_items": int(truth.shape[0])}}
