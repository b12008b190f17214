"""NaN-safe per-finding ROC-AUC against hand labels, for a model and for each training label set.

The hand labels (``y_true``, ``B × N``) are clean 0/1 values with NaN where a finding was not
labelled. Every AUC is computed per finding on the rows where that finding's hand label is
present; a finding with no labelled rows or a single class gets AUC NaN and is reported as
skipped, never raised. Macro averages run over the findings with a defined AUC, like the
"Average" row of Table 4 in Wang et al. (WACV 2024), whose left part (each training label
set's own AUC against the hand labels) :func:`label_set_auc` reproduces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from l2v_monai.evaluation.inputs import as_float_array, check_binary_labels, check_finite_scores, check_matrix

__all__ = [
    "SKIP_NO_LABELS",
    "SKIP_ONLY_POSITIVES",
    "SKIP_ONLY_NEGATIVES",
    "per_finding_auc",
    "label_set_auc",
    "describe_skipped",
]

SKIP_NO_LABELS = "no labels"
SKIP_ONLY_POSITIVES = "only positives"
SKIP_ONLY_NEGATIVES = "only negatives"


def skip_reason(n: int, positives: int) -> str | None:
    if n == 0:
        return SKIP_NO_LABELS
    if positives == n:
        return SKIP_ONLY_POSITIVES
    if positives == 0:
        return SKIP_ONLY_NEGATIVES
    return None


def _auc_by_finding(y_true: np.ndarray, y_score: np.ndarray, findings: Sequence[str]) -> dict[str, Any]:
    """Per-finding AUC over the rows where both the label and the score are present."""
    per_finding: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for col, finding in enumerate(findings):
        present = ~np.isnan(y_true[:, col]) & ~np.isnan(y_score[:, col])
        labels, scores = y_true[present, col], y_score[present, col]
        n, positives = int(labels.size), int((labels == 1).sum())
        reason = skip_reason(n, positives)
        auc = math.nan if reason else float(roc_auc_score(labels, scores))
        per_finding[finding] = {"auc": auc, "n": n, "positives": positives, "negatives": n - positives, "skipped": reason}
        if reason:
            skipped[finding] = reason
    defined = [v["auc"] for v in per_finding.values() if v["skipped"] is None]
    return {
        "per_finding": per_finding,
        "macro_auc": float(np.mean(defined)) if defined else math.nan,
        "n_scored": len(defined),
        "skipped": skipped,
    }


def per_finding_auc(
    y_true: Any, y_score: Any, findings: Sequence[str], names: tuple[str, str] = ("y_true", "y_score")
) -> dict[str, Any]:
    """ROC-AUC of ``y_score`` (``B × N``) against hand labels ``y_true`` (``B × N``, NaN = unlabelled).

    Returns ``{"per_finding": {finding: {"auc", "n", "positives", "negatives", "skipped"}},
    "macro_auc", "n_scored", "skipped": {finding: reason}}``; ``skipped`` reasons are
    ``"no labels"``, ``"only positives"`` or ``"only negatives"`` and those findings have AUC NaN.
    ``macro_auc`` is the mean over the findings with a defined AUC (NaN if there are none).
    Scores may be logits or probabilities (AUC only depends on their order) but must be finite.
    ``names`` are what error messages call the two inputs.
    """
    findings = list(findings)
    truth_name, score_name = names
    truth, scores = as_float_array(y_true, truth_name), as_float_array(y_score, score_name)
    check_matrix(truth, truth_name, findings)
    check_matrix(scores, score_name, findings)
    if truth.shape != scores.shape:
        raise ValueError(f"{truth_name} has shape {truth.shape} but {score_name} has shape {scores.shape}")
    check_binary_labels(truth, truth_name, findings)
    check_finite_scores(scores, score_name, findings)
    return _auc_by_finding(truth, scores, findings)


def label_set_auc(
    labels: Any,
    label_set_names: Sequence[str],
    y_true: Any,
    findings: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each training label set's AUC against the hand labels (the left part of Table 4).

    ``labels`` is ``B × M × N`` (NaN = the label set has no label there); each label set's 0/1
    values are used as scores, so its AUC is its balanced accuracy. Per finding, rows where
    either the label set or the hand label is missing are left out. Returns
    ``{label_set_name: per_finding_auc-style result}``. ``findings`` defaults to the 14
    CheXpert findings.
    """
    if findings is None:
        from l2v_monai.findings import CHEXPERT_FINDINGS

        findings = CHEXPERT_FINDINGS
    findings, names = list(findings), list(label_set_names)
    sets, truth = as_float_array(labels, "labels"), as_float_array(y_true, "y_true")
    if sets.ndim != 3:
        raise ValueError(f"labels must be B x M x N (samples x label sets x findings), got shape {tuple(sets.shape)}")
    if sets.shape[1] != len(names):
        raise ValueError(f"labels has {sets.shape[1]} label sets but {len(names)} label set names were given")
    if len(set(names)) != len(names):
        raise ValueError(f"label set names must be unique, got {names}")
    check_matrix(truth, "y_true", findings)
    if sets.shape[0] != truth.shape[0] or sets.shape[2] != truth.shape[1]:
        raise ValueError(f"labels has shape {sets.shape} but y_true has shape {truth.shape}; expected B x M x N and B x N")
    check_binary_labels(truth, "y_true", findings)
    results = {}
    for m, name in enumerate(names):
        # The label sets were mapped to 0/1 upstream; a -1 here would be an unmapped "uncertain".
        check_binary_labels(sets[:, m, :], f"labels[{name!r}]", findings)
        results[name] = _auc_by_finding(truth, sets[:, m, :], findings)
    return results


def describe_skipped(skipped: Mapping[str, str]) -> str:
    """``"Edema (no labels), Fracture (only negatives)"``: finding names and reasons, no patient data."""
    return ", ".join(f"{finding} ({reason})" for finding, reason in skipped.items())
