"""Input checks shared by every AUC: numeric matrices, 0/1/NaN hand labels, finite scores.

Errors name the input, the first bad row and finding, and how many values are bad; never a value
from a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["as_float_array", "check_matrix", "check_binary_labels", "check_finite_scores"]


def as_float_array(values: Any, name: str) -> np.ndarray:
    """``values`` (numpy, torch or nested lists with ``None``) as a float64 array."""
    if isinstance(values, torch.Tensor):
        # .double() first: numpy has no bfloat16 (AMP logits).
        values = values.detach().cpu().double().numpy()
    try:
        # None (JSON null) becomes NaN through the float dtype.
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric (numbers or null/NaN): {err}") from None


def check_matrix(y: np.ndarray, name: str, findings: Sequence[str]) -> None:
    """``y`` is ``B × N`` with one column per (unique) finding name."""
    if len(set(findings)) != len(findings):
        raise ValueError(f"finding names must be unique, got {list(findings)}")
    if y.ndim != 2:
        raise ValueError(f"{name} must be a B x N matrix (samples x findings), got shape {tuple(y.shape)}")
    if y.shape[1] != len(findings):
        raise ValueError(f"{name} has {y.shape[1]} findings (columns) but {len(findings)} finding names were given")


def _first_bad(bad: np.ndarray) -> tuple[int, int]:
    row, col = np.argwhere(bad)[0]
    return int(row), int(col)


def check_binary_labels(y: np.ndarray, name: str, findings: Sequence[str]) -> None:
    """Hand labels must be 0, 1 or NaN; anything else (e.g. an unmapped -1 "uncertain") is an error."""
    bad = ~(np.isnan(y) | (y == 0) | (y == 1))
    if bad.any():
        row, col = _first_bad(bad)
        raise ValueError(
            f"{name}[row {row}, {findings[col]!r}] = {float(y[row, col]):g}: labels must be 0, 1 or NaN "
            f"({int(bad.sum())} bad value(s) in total)"
        )


def check_finite_scores(y: np.ndarray, name: str, findings: Sequence[str]) -> None:
    """Scores (logits or probabilities) must be finite: a NaN score is a bug upstream, not a missing label."""
    bad = ~np.isfinite(y)
    if bad.any():
        row, col = _first_bad(bad)
        raise ValueError(
            f"{name}[row {row}, {findings[col]!r}] = {float(y[row, col]):g}: scores must be finite "
            f"({int(bad.sum())} non-finite value(s) in total)"
        )
