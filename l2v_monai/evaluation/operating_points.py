"""Where should a finding's call switch from 0 to 1 here, and what will sensitivity, specificity, PPV and NPV then be?

A threshold is chosen on the hospital's hand labels for a rule: a target sensitivity
(``sensitivity=0.90``: the highest threshold whose sensitivity reaches 0.90), a target
specificity (``specificity=0.95``: the lowest threshold whose specificity reaches 0.95) or
Youden's J (max sensitivity + specificity − 1). Figures measured on the items that chose the
threshold flatter it, so they are measured elsewhere:

* ``tuning`` split: chosen on the tuning items, measured on the others;
* cross-fitting (default, k folds, whole patients kept in one fold, stratified by the finding):
  each fold's calls come from a threshold chosen on the other folds; the pooled out-of-fold calls
  give the reported figures. The saved threshold is then chosen on all the hand-labelled items:
  the figures estimate how that procedure performs on new items.

Each figure has a 95 % Wilson score interval (it treats the threshold as fixed, so it is a little
narrow for cross-fitted figures). PPV and NPV hold at this set's prevalence only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_curve
from sklearn.model_selection import StratifiedGroupKFold

from l2v_monai.evaluation.auc import skip_reason
from l2v_monai.evaluation.intervals import NOT_ESTIMABLE, check_inputs

__all__ = ["RULES", "parse_rule", "choose_threshold", "wilson_interval", "rates_at", "operating_points", "thresholds_of"]

RULES = ("sensitivity", "specificity", "youden")
DEFAULT_FOLDS = 5


def parse_rule(text: str) -> tuple[str, float | None]:
    """``"sensitivity=0.9"``, ``"specificity=0.95"`` or ``"youden"`` → ``(rule, target)``."""
    name, _, value = text.strip().partition("=")
    name = name.strip().lower()
    if name not in RULES:
        raise ValueError(f"operating point {text!r}: the rule must be one of {', '.join(RULES)} (e.g. sensitivity=0.9)")
    if name == "youden":
        if value:
            raise ValueError(f"operating point {text!r}: youden takes no target")
        return name, None
    try:
        target = float(value)
    except ValueError:
        raise ValueError(f"operating point {text!r}: {name} needs a target in (0, 1], e.g. {name}=0.9") from None
    if not 0.0 < target <= 1.0:
        raise ValueError(f"operating point {text!r}: the target must be in (0, 1]")
    return name, target


def choose_threshold(labels: np.ndarray, scores: np.ndarray, rule: str, target: float | None = None) -> float:
    """The threshold (call 1 where ``score >= threshold``) that meets ``rule`` on these labels."""
    labels = labels.astype(bool)
    positives, negatives = np.sort(scores[labels])[::-1], np.sort(scores[~labels])
    if rule == "sensitivity":
        # The k-th highest positive score: at least k of the positives lie at or above it.
        k = max(1, math.ceil(target * positives.size - 1e-9))
        return float(positives[k - 1])
    if rule == "specificity":
        # Just above the k-th lowest negative score: at least k negatives lie strictly below it.
        k = max(1, math.ceil(target * negatives.size - 1e-9))
        return float(np.nextafter(negatives[k - 1], np.inf))
    if rule == "youden":
        fpr, tpr, thresholds = roc_curve(labels, scores)
        best = int(np.argmax(tpr - fpr))
        return float(min(thresholds[best], np.max(scores)))  # roc_curve's first threshold is +inf
    raise ValueError(f"unknown rule {rule!r} (known: {RULES})")


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """``(k/n, low, high)``: the Wilson score interval of a proportion; NaN when ``n`` is 0."""
    if n == 0:
        return math.nan, math.nan, math.nan
    z = float(norm.ppf(0.5 + level / 2.0))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def rates_at(labels: np.ndarray, calls: np.ndarray, level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Sensitivity, specificity, PPV and NPV of 0/1 ``calls``, each ``{"value", "low", "high", "k", "n"}``."""
    labels, calls = labels.astype(bool), calls.astype(bool)
    tp, fn = int((calls & labels).sum()), int((~calls & labels).sum())
    tn, fp = int((~calls & ~labels).sum()), int((calls & ~labels).sum())
    out = {}
    for name, k, n in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp), ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
        value, low, high = wilson_interval(k, n, level)
        out[name] = {"value": value, "low": low, "high": high, "k": k, "n": n}
    return out


def _folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number per item: whole groups in one fold, each class spread over the folds."""
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.empty(labels.size, dtype=np.int64)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(labels.size), labels, groups)):
        fold[held_out] = k
    return fold


def operating_points(
    y_true: Any,
    y_prob: Any,
    findings: Sequence[str],
    rule: str,
    target: float | None = None,
    tuning: Sequence[bool] | None = None,
    n_folds: int = DEFAULT_FOLDS,
    groups: Sequence[Any] | None = None,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Choose each finding's threshold and measure it away from the items that chose it.

    ``tuning`` (one bool per item) selects the tuning items; without it, ``n_folds``-fold
    cross-fitting within the set (``groups``: patient ids kept together). Returns
    ``{"rule", "target", "scheme", "per_finding": {finding: {"threshold", "on_tuning": rates,
    "measured": rates, ...}}}``; a finding that cannot be tuned has ``threshold`` None and a reason.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} (known: {RULES})")
    if (rule == "youden") != (target is None):
        raise ValueError(f"rule {rule!r} {'takes no' if rule == 'youden' else 'needs a'} target")
    findings = list(findings)
    truth, scores = check_inputs(y_true, y_prob, findings, score_name="probabilities")
    n_items = truth.shape[0]
    group_ids = np.arange(n_items) if groups is None else np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1]
    if tuning is not None:
        tuning_mask = np.asarray(tuning, dtype=bool)
        if tuning_mask.shape != (n_items,):
            raise ValueError(f"tuning must hold one bool per item ({n_items}), got shape {tuning_mask.shape}")
        scheme = {"kind": "tuning split", "n_tuning": int(tuning_mask.sum()), "n_measured": int((~tuning_mask).sum())}
    else:
        scheme = {"kind": "cross-fitting", "n_folds": n_folds, "seed": seed,
                  "grouped_by": "patient" if groups is not None else "study"}

    per_finding: dict[str, dict[str, Any]] = {}
    for col, finding in enumerate(findings):
        present = ~np.isnan(truth[:, col])
        labels, p = truth[present, col].astype(bool), scores[present, col]
        row: dict[str, Any] = {"n": int(labels.size), "positives": int(labels.sum())}
        if tuning is not None:
            tune = tuning_mask[present]
            reason = skip_reason(int(tune.sum()), int(labels[tune].sum())) or skip_reason(
                int((~tune).sum()), int(labels[~tune].sum()))
            if reason:
                per_finding[finding] = {**row, "threshold": None, "reason": f"{NOT_ESTIMABLE}: tuning or measured items have {reason}"}
                continue
            threshold = choose_threshold(labels[tune], p[tune], rule, target)
            measured = rates_at(labels[~tune], p[~tune] >= threshold, level)
            on_tuning = rates_at(labels[tune], p[tune] >= threshold, level)
        else:
            reason = skip_reason(int(labels.size), int(labels.sum()))
            # Each fold must keep both classes on its tuning side: at most as many folds as the rarer class has groups.
            rarer = min(np.unique(group_ids[present][labels]).size, np.unique(group_ids[present][~labels]).size) if not reason else 0
            folds = min(n_folds, rarer)
            if reason or folds < 2:
                why = reason or f"{int(labels.sum())} positive(s) / {int((~labels).sum())} negative(s): too few to cross-fit"
                per_finding[finding] = {**row, "threshold": None, "reason": f"{NOT_ESTIMABLE}: {why}"}
                continue
            fold = _folds(labels, group_ids[present], folds, seed)
            lacking = [k for k in range(folds) if len(set(labels[fold != k].tolist())) < 2]
            if lacking:
                # Whole patients per fold can leave a tuning side with one class; then no honest figure exists.
                per_finding[finding] = {**row, "threshold": None, "reason": f"{NOT_ESTIMABLE}: keeping patients together "
                                        f"leaves fold {lacking[0] + 1} of {folds} without both classes to tune on"}
                continue
            out_of_fold = np.zeros(labels.size, dtype=bool)
            fold_thresholds = []
            for k in range(folds):
                train = fold != k
                t = choose_threshold(labels[train], p[train], rule, target)
                fold_thresholds.append(t)
                out_of_fold[~train] = p[~train] >= t
            measured = rates_at(labels, out_of_fold, level)
            threshold = choose_threshold(labels, p, rule, target)
            on_tuning = rates_at(labels, p >= threshold, level)
            row["fold_thresholds"] = fold_thresholds
            row["n_folds"] = folds
        per_finding[finding] = {**row, "threshold": threshold, "on_tuning": on_tuning, "measured": measured}
    return {"rule": rule, "target": target, "level": level, "scheme": scheme, "findings": findings, "per_finding": per_finding}


def thresholds_of(result: dict[str, Any]) -> dict[str, float | None]:
    """``{finding: threshold or None}`` from an :func:`operating_points` result, for ``save_thresholds``."""
    return {f: v["threshold"] for f, v in result["per_finding"].items()}
