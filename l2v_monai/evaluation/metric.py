"""Macro ROC-AUC as a MONAI metric (:class:`MacroAUC`) and its Ignite handler (:class:`MacroAUCHandler`).

Validation's key metric: NaN-safe across findings (see :mod:`l2v_monai.evaluation.auc`),
gathered across DDP ranks by MONAI's ``Cumulative`` buffers. Core dependencies only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric

from l2v_monai.evaluation.auc import describe_skipped, per_finding_auc

__all__ = ["MacroAUC", "MacroAUCHandler"]

logger = logging.getLogger(__name__)


class MacroAUC(CumulativeIterationMetric):
    """NaN-safe macro ROC-AUC over findings, for validation as a MONAI key metric.

    Accumulates ``y_pred`` (``B × N`` logits or probabilities) and ``y`` (``B × N`` labels, NaN =
    missing) over the iterations; :meth:`aggregate` gathers them across DDP ranks (MONAI's
    ``Cumulative`` buffers) and returns the mean AUC over the findings with both classes present,
    so it is never NaN while at least one finding can be scored; when none can, ``aggregate``
    raises a ``ValueError`` naming each finding and why (a NaN key metric would silently stop
    model selection). After ``aggregate``, ``per_finding`` holds each finding's AUC and
    ``skipped`` the findings left out with the reason.

    Args:
        findings: names of the N outputs (default ``"0"`` ... ``"N-1"``).
        label_threshold: when given, labels ``>= label_threshold`` count as positive and the rest
            negative (for soft targets such as the mean of label sets); otherwise labels must be 0/1/NaN.
    """

    def __init__(self, findings: Sequence[str] | None = None, label_threshold: float | None = None) -> None:
        super().__init__()
        self.findings = list(findings) if findings is not None else None
        self.label_threshold = label_threshold
        self.per_finding: dict[str, float] = {}
        self.skipped: dict[str, str] = {}

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if y is None:
            raise ValueError("MacroAUC needs labels y as well as predictions y_pred")
        if y_pred.ndim != 2 or y.shape != y_pred.shape:
            raise ValueError(
                f"MacroAUC expects y_pred and y of shape B x N, got {tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        # Stored as float so NaN (missing) labels survive the DDP all-gather.
        return y_pred.float(), y.float()

    def aggregate(self) -> float:  # type: ignore[override]
        """Macro AUC over the findings with both classes (NaN if none); updates ``per_finding`` and ``skipped``."""
        buffers = self.get_buffer()
        if buffers is None:
            raise ValueError("MacroAUC.aggregate() called before any (y_pred, y) batch was added")
        y_pred, y = buffers
        truth = y.cpu().numpy().astype(np.float64)
        if self.label_threshold is not None:
            truth = np.where(np.isnan(truth), np.nan, (truth >= self.label_threshold).astype(np.float64))
        finding_names = self.findings if self.findings is not None else [str(i) for i in range(truth.shape[1])]
        result = per_finding_auc(truth, y_pred.cpu().numpy(), finding_names, names=("MacroAUC labels y", "MacroAUC y_pred"))
        self.per_finding = {f: v["auc"] for f, v in result["per_finding"].items()}
        self.skipped = dict(result["skipped"])
        if result["n_scored"] == 0:
            raise ValueError(
                "MacroAUC: no finding can be scored, every one lacks labels or has a single class in the "
                f"validation labels ({describe_skipped(self.skipped)}); a macro AUC needs at least one finding "
                "with both positive and negative labels: add such items to the validation split"
            )
        return result["macro_auc"]


class MacroAUCHandler(IgniteMetricHandler):
    """Ignite handler for :class:`MacroAUC`, shaped like ``monai.handlers.ROCAUC``.

    The findings skipped in an epoch (no labels or one class in the validation set) are logged
    once per epoch at INFO, names only, and kept in ``skipped``; ``per_finding`` holds the AUCs.

    Args:
        findings: names of the N outputs, for ``per_finding``/``skipped`` and the log line.
        label_threshold: see :class:`MacroAUC`.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
    """

    def __init__(
        self,
        findings: Sequence[str] | None = None,
        label_threshold: float | None = None,
        output_transform: Callable = lambda x: x,
    ) -> None:
        metric_fn = MacroAUC(findings=findings, label_threshold=label_threshold)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)

    @property
    def skipped(self) -> dict[str, str]:
        """Findings left out of the last computed macro AUC, with the reason."""
        return self.metric_fn.skipped  # type: ignore[attr-defined]

    @property
    def per_finding(self) -> dict[str, float]:
        """Each finding's AUC in the last computation (NaN for skipped ones)."""
        return self.metric_fn.per_finding  # type: ignore[attr-defined]

    def compute(self) -> Any:
        # Ignite calls compute once per epoch (EPOCH_COMPLETED), so this logs once per epoch.
        value = super().compute()
        if self.skipped:
            logger.info(
                "%s: %d finding(s) skipped, left out of the macro AUC (no labels or one class in validation): %s",
                self._name or "MacroAUC",
                len(self.skipped),
                describe_skipped(self.skipped),
            )
        return value
