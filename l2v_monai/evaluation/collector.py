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

from l2v_monai.evaluation.hand_set import patient_ids
from l2v_monai.evaluation.report import hospital_report
from l2v_monai.evaluation.subgroups import SUBGROUP_COLUMNS, check_metadata
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

    def report(
        self,
        findings: Sequence[str],
        out_dir: str | Path,
        items: Sequence[dict[str, Any]] | None = None,
        model_name: str = "model",
        n_resamples: int = 2000,
        seed: int = 0,
        operating_point: str | None = None,
        recalibrate: str | None = None,
        thresholds_path: str | Path | None = None,
        calibration_path: str | Path | None = None,
        source: str = "",
    ) -> dict[str, Any]:
        """Write ``report.md`` (see :func:`~l2v_monai.evaluation.report.hospital_report`) for what was collected.

        ``items`` are the evaluated datalist items in loader order (``validate#items``): their
        patient ids group the bootstrap and their metadata gives the subgroups.
        """
        if not self.scores:
            raise RuntimeError("no predictions were collected: did the evaluator run on an empty dataset?")
        truth, scores = np.concatenate(self.truth), np.concatenate(self.scores)
        key = groups = metadata = None
        if items is not None:
            if len(items) != truth.shape[0]:
                raise ValueError(f"{len(items)} items were given for {truth.shape[0]} collected predictions")
            key, groups = patient_ids(items)
            columns = [c for c in SUBGROUP_COLUMNS if any(c in it for it in items)]
            metadata = check_metadata(items, columns, source=source or "datalist") if columns else None
        return hospital_report(
            truth, scores, list(findings), out_dir, model_name=model_name, groups=groups, patient_key=key,
            metadata=metadata, n_resamples=n_resamples, seed=seed, operating_point=operating_point,
            recalibrate=recalibrate, thresholds_path=thresholds_path if operating_point else None,
            calibration_path=calibration_path if recalibrate else None, source=source,
        )
