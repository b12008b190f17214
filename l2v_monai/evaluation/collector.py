""":class:`PredictionCollector`: gather an evaluator's probabilities and labels, then score them once.

Collecting needs only the core; :meth:`PredictionCollector.write` writes tables and ROC plots and
so needs the ``[eval]`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2v_monai.evaluation.summary import evaluate_predictions

__all__ = ["PredictionCollector"]


class PredictionCollector:
    """Ignite handler that gathers an evaluator's probabilities, clean labels and (optionally) the
    items' training label sets, so that :func:`evaluate_predictions` can score them at the end.

    Attach it to a MONAI ``SupervisedEvaluator`` with ``decollate=False``; predictions are logits
    and are stored as sigmoid probabilities.
    """

    def __init__(self, labels_key: str = "labels") -> None:
        self.labels_key = labels_key
        self.scores: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []
        self.label_sets: list[np.ndarray] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.__init__(self.labels_key))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        output = engine.state.output
        pred, label = output["pred"], output["label"]
        self.scores.append(torch.sigmoid(pred.detach().float()).cpu().numpy())
        self.truth.append(label.detach().float().cpu().numpy())
        sets = engine.state.batch.get(self.labels_key) if isinstance(engine.state.batch, dict) else None
        if sets is not None:
            self.label_sets.append(torch.as_tensor(sets).float().cpu().numpy())

    def write(
        self,
        findings: Sequence[str],
        out_dir: str | Path,
        label_set_names: Sequence[str] | None = None,
        model_name: str = "model",
        include_label_sets: bool = True,
    ) -> dict[str, Any]:
        """Score what was collected (see :func:`evaluate_predictions`) and write the tables and plots."""
        if not self.scores:
            raise RuntimeError("no predictions were collected: did the evaluator run on an empty dataset?")
        use_sets = include_label_sets and label_set_names and len(self.label_sets) == len(self.scores)
        return evaluate_predictions(
            np.concatenate(self.truth),
            np.concatenate(self.scores),
            list(findings),
            out_dir,
            label_sets=np.concatenate(self.label_sets) if use_sets else None,
            label_set_names=list(label_set_names) if use_sets else None,
            model_name=model_name,
        )
