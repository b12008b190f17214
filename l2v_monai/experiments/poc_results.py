"""The proof of concept's results: the paper's Table 2 and Table 3 quantities for one run.

* :class:`RefinedLabelStats` — an Ignite handler that accumulates, over each training epoch,
  the accuracy of the refined training labels against the clean ones and the mean vote weight
  each annotator gets on its clean vs its noisy labels; it keeps the epoch whose model is best
  on the *noisy* validation split, together with that model's weights.
* :func:`finish` — loads that model, scores it on the clean test set (the only use of clean test
  labels), writes ``results.json`` and prints the table.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from l2v_monai.engine.trainer import to_device, unwrap

__all__ = ["ArgmaxAccuracy", "RefinedLabelStats", "clean_test_accuracy", "finish", "format_table"]

logger = logging.getLogger(__name__)


class ArgmaxAccuracy(Metric):
    """Multi-class accuracy of ``argmax(pred)`` against one-hot labels, skipping rows whose label is NaN.

    Validation labels are the noisy majority vote with ties left NaN, so only decided rows count.
    """

    def reset(self) -> None:
        self._correct = 0
        self._total = 0

    def update(self, output: Sequence[torch.Tensor]) -> None:
        pred, label = output
        pred = torch.stack(list(pred)) if isinstance(pred, (list, tuple)) else pred
        label = torch.stack(list(label)) if isinstance(label, (list, tuple)) else label
        ok = ~torch.isnan(label).any(dim=1)
        self._correct += int((pred[ok].argmax(dim=1) == label[ok].argmax(dim=1)).sum())
        self._total += int(ok.sum())

    def compute(self) -> float:
        return self._correct / self._total if self._total else float("nan")


def _stack_output(output: Any, key: str) -> torch.Tensor | None:
    """Trainer output is a dict (``decollate=False``) or a list of per-sample dicts."""
    if isinstance(output, dict):
        return output.get(key)
    values = [o.get(key) for o in output]
    return None if any(x is None for x in values) else torch.stack(values)


class RefinedLabelStats:
    """Per-epoch refined-label accuracy and vote weights on clean vs noisy labels (Tables 2–3).

    Needs ``clean`` (the true class index) in the training batches; it is never shown to the
    strategy or the network, only counted here.
    """

    def __init__(self, annotators: Sequence[str], network: nn.Module, evaluator: Engine | None = None, clean_key: str = "clean") -> None:
        self.annotators = list(annotators)
        self.network = network
        self.evaluator = evaluator
        self.clean_key = clean_key
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        m = len(self.annotators)
        self.correct = 0
        self.count = 0
        self.w_sum = np.zeros((m, 2))  # [:, 0] noisy, [:, 1] clean
        self.w_cnt = np.zeros((m, 2))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        # A run resumed in the middle of an epoch keeps the counts restored from its checkpoint.
        length = engine.state.epoch_length
        if not length or engine.state.iteration % length == 0:
            self._reset()

    def state_dict(self) -> dict[str, Any]:
        """Everything the results need after a resume (history, best epoch and network, the epoch's counts)."""
        return {
            "history": json.dumps(self.history), "best": json.dumps(self.best),
            "best_state": self.best_state or {}, "correct": self.correct, "count": self.count,
            "w_sum": torch.from_numpy(self.w_sum.copy()), "w_cnt": torch.from_numpy(self.w_cnt.copy()),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = json.loads(state_dict["history"])
        self.best = json.loads(state_dict["best"])
        self.best_state = dict(state_dict["best_state"]) or None
        self.correct, self.count = int(state_dict["correct"]), int(state_dict["count"])
        self.w_sum, self.w_cnt = state_dict["w_sum"].numpy().copy(), state_dict["w_cnt"].numpy().copy()

    def iteration_completed(self, engine: Engine) -> None:
        clean = engine.state.batch[self.clean_key].long().cpu()
        target = _stack_output(engine.state.output, "label")
        labels = _stack_output(engine.state.output, "labels")
        weights = _stack_output(engine.state.output, "vote_weights")
        if target is not None:
            target = target.detach().float().cpu()
            ok = ~torch.isnan(target).any(dim=1)
            self.correct += int((target[ok].argmax(dim=1) == clean[ok]).sum())
            self.count += int(ok.sum())
        if weights is not None and labels is not None:
            labels = labels.detach().cpu()
            w = weights.detach().float().cpu()
            if w.dim() == 3:  # per-finding votes: the weight on the set's chosen class
                w = torch.gather(w, 2, torch.nan_to_num(labels).argmax(2, keepdim=True)).squeeze(2)
            present = ~torch.isnan(labels).any(dim=2)
            is_clean = torch.nan_to_num(labels).argmax(dim=2) == clean.unsqueeze(1)
            for m in range(len(self.annotators)):
                for flag in (0, 1):
                    sel = present[:, m] & (is_clean[:, m] == bool(flag))
                    self.w_sum[m, flag] += float(w[sel, m].sum())
                    self.w_cnt[m, flag] += int(sel.sum())

    def summary(self) -> dict[str, Any]:
        def mean(s: float, c: float) -> float | None:
            return None if c == 0 else s / c

        return {
            "refined_label_accuracy": mean(self.correct, self.count),
            "vote_weights": {
                name: {"noisy": mean(self.w_sum[i, 0], self.w_cnt[i, 0]), "clean": mean(self.w_sum[i, 1], self.w_cnt[i, 1])}
                for i, name in enumerate(self.annotators)
            }
            if self.w_cnt.sum() > 0
            else None,
        }

    def epoch_completed(self, engine: Engine) -> None:
        stats = {"epoch": engine.state.epoch, **self.summary()}
        if self.evaluator is not None:
            # The validation handler runs before this one (attached first), so its result is current.
            stats["validation"] = dict(self.evaluator.state.metrics)
            improved = self.evaluator.state.best_metric_epoch == engine.state.epoch
        else:
            improved = True
        self.history.append(stats)
        if improved or self.best is None:
            self.best = stats
            self.best_state = copy.deepcopy(unwrap(self.network).state_dict())


@torch.no_grad()
def clean_test_accuracy(network: nn.Module, items: Sequence[dict], device: torch.device | str, batch_size: int = 256) -> float:
    """Accuracy of ``argmax(logits)`` against the clean test labels."""
    from monai.data import DataLoader, Dataset

    network.eval()
    correct = total = 0
    for batch in DataLoader(Dataset(list(items)), batch_size=batch_size, shuffle=False):
        batch = to_device(batch, device)
        pred = network(batch["image"].float()).argmax(dim=1)
        correct += int((pred == batch["clean"].long()).sum())
        total += len(pred)
    return correct / max(total, 1)


def annotator_label_accuracy(items: Sequence[dict], annotators: Sequence[str]) -> dict[str, float]:
    """Each annotator's label accuracy on the training items (the paper's "Accuracy-Label" row)."""
    labels = np.stack([np.asarray(it["labels"], dtype=np.float32) for it in items])
    clean = np.array([int(it["clean"]) for it in items])
    return {name: float((labels[:, i].argmax(1) == clean).mean()) for i, name in enumerate(annotators)}


def _fmt(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def format_table(results: dict[str, Any]) -> str:
    """A markdown table of one run's results."""
    lines = [
        f"learning from {len(results['annotators'])} label sets: {results['strategy']}"
        + (f" ({results['variant']})" if results.get("variant") else "")
        + f", {results['dataset']}, seed {results['seed']}",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| test accuracy (clean test labels) | {_fmt(results['test_accuracy'])} |",
        f"| refined training labels vs clean | {_fmt(results['refined_label_accuracy'])} |",
        f"| best epoch (by noisy validation) | {results['best_epoch']} |",
    ]
    if results.get("estimated_annotator_accuracy"):
        lines += ["", "| annotator | label accuracy | accuracy the vote learned |", "|---|---|---|"]
        for name, est in results["estimated_annotator_accuracy"].items():
            lines.append(f"| {name} | {_fmt(results['annotator_label_accuracy'].get(name))} | {_fmt(est)} |")
    if results.get("vote_weights"):
        lines += ["", "| annotator | label accuracy | mean w (clean labels) | mean w (noisy labels) |", "|---|---|---|---|"]
        for name, w in results["vote_weights"].items():
            acc = results["annotator_label_accuracy"].get(name)
            lines.append(f"| {name} | {_fmt(acc)} | {_fmt(w['clean'])} | {_fmt(w['noisy'])} |")
    return "\n".join(lines)


def finish(
    stats: RefinedLabelStats,
    network: nn.Module,
    splits: dict[str, Any],
    output_dir: str | Path,
    device: torch.device | str,
    config: dict[str, Any],
    strategy: nn.Module | None = None,
) -> dict[str, Any]:
    """Score the best-on-noisy-validation model on the clean test set, write results.json, print the table.

    A strategy that learns each annotator's reliability (``set_accuracy()``, the posterior vote's
    tables at the end of training) adds its estimates beside the annotators' true label accuracy.
    """
    if stats.best_state is not None:
        unwrap(network).load_state_dict(stats.best_state)
    best = stats.best or {}
    results = {
        **config,
        "annotators": list(stats.annotators),
        "best_epoch": best.get("epoch"),
        "validation": best.get("validation"),
        "refined_label_accuracy": best.get("refined_label_accuracy"),
        "vote_weights": best.get("vote_weights"),
        "annotator_label_accuracy": annotator_label_accuracy(splits["training"], stats.annotators),
        "estimated_annotator_accuracy": (
            dict(zip(stats.annotators, (float(a) for a in strategy.set_accuracy())))
            if hasattr(strategy, "set_accuracy") else None
        ),
        "test_accuracy": clean_test_accuracy(network, splits["test"], device),
        "history": stats.history,
    }
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = format_table(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten: {out / 'results.json'}")
    return results
