"""Does the model work as well for AP as for PA films, for women as for men, at each site? AUC per subgroup.

Items may carry metadata (``view``, ``sex``, ``age_band``, ``site``, ``scanner``; the MIMIC and
manifest preparers keep what their sources have). For each such column present on the items, each
value's items get the per-finding and macro AUC with bootstrap intervals
(:func:`~l2v_monai.evaluation.intervals.auc_intervals`). Small subgroups are shown and flagged
(fewer than ``min_per_class`` positives or negatives for a finding), never hidden. Values outside
a column's known vocabulary are an error naming the item: a typo would otherwise make a subgroup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from l2v_monai.evaluation.bootstrap import DEFAULT_RESAMPLES
from l2v_monai.evaluation.intervals import auc_intervals

__all__ = ["SUBGROUP_COLUMNS", "MISSING", "check_metadata", "subgroup_aucs"]

MISSING = "(not recorded)"
SUBGROUP_COLUMNS = ("view", "sex", "age_band", "site", "scanner")
# Checked vocabularies; site and scanner are free text (any non-empty string).
_VIEWS = {"PA", "AP", "LATERAL", "LL", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD", "LAO", "RAO", "XTABLE LATERAL",
          "SWIMMERS", "LPO"}
_SEXES = {"F", "M", "O"}
_AGE_BAND = re.compile(r"^\d{1,3}-\d{1,3}$|^\d{1,3}\+$")
DEFAULT_MIN_PER_CLASS = 10


def _check_value(column: str, value: Any) -> str | None:
    """Why ``value`` is not allowed in ``column`` (``None`` when it is)."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    if column == "view" and value.upper() not in _VIEWS:
        return f"is not a known view ({', '.join(sorted(_VIEWS))})"
    if column == "sex" and value.upper() not in _SEXES:
        return "must be F, M or O"
    if column == "age_band" and not _AGE_BAND.match(value):
        return "must look like 40-49 or 80+"
    return None


def check_metadata(items: Sequence[Mapping[str, Any]], columns: Sequence[str], source: str = "datalist") -> dict[str, list[str]]:
    """``{column: one value per item}`` (``MISSING`` where an item lacks it); a bad value raises naming the item."""
    out: dict[str, list[str]] = {}
    for column in columns:
        values = []
        for index, item in enumerate(items):
            value = item.get(column)
            if value is None:
                values.append(MISSING)
                continue
            why = _check_value(column, value)
            if why:
                raise ValueError(f"{source}: item {index} ({item.get('image', '?')}) has {column} = {value!r}, which {why}")
            values.append(value.upper() if column in ("view", "sex") else value)
        out[column] = values
    return out


def subgroup_aucs(
    y_true: Any,
    y_score: Any,
    findings: Sequence[str],
    metadata: Mapping[str, Sequence[str]],
    groups: Sequence[Any] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
) -> dict[str, dict[str, Any]]:
    """``{column: {value: {"n_items", "small", "small_findings", **auc_intervals(...)}}}`` for each metadata column."""
    truth, scores = np.asarray(y_true, dtype=np.float64), np.asarray(y_score, dtype=np.float64)
    patient = None if groups is None else np.asarray([str(g) for g in groups])
    out: dict[str, dict[str, Any]] = {}
    for column, values in metadata.items():
        values = np.asarray(values, dtype=object)
        if values.shape != (truth.shape[0],):
            raise ValueError(f"metadata column {column!r} has {values.size} values for {truth.shape[0]} items")
        out[column] = {}
        for value in sorted(set(values.tolist())):
            mask = values == value
            result = auc_intervals(truth[mask], scores[mask], findings, None if patient is None else patient[mask].tolist(),
                                   n_resamples, seed)
            small = [f for f, r in result["per_finding"].items()
                     if r["estimable"] and min(r["positives"], r["negatives"]) < min_per_class]
            out[column][value] = {"n_items": int(mask.sum()), "small": bool(small) or not result["macro"]["estimable"],
                                  "small_findings": small, **result}
    return out
