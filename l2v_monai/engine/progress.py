"""What a user sees while a run trains: loss terms per iteration, their epoch means, progress bars.

The trainer's ``engine.state.output`` holds ``loss`` and the strategy's extra losses
(``model_loss``, ``probe_loss``, ``agreement_loss``, ``meta_loss``; see
:class:`~l2v_monai.strategies.StrategyOutput`). :func:`loss_terms` turns them into the
``{name: float}`` MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` print and plot per
iteration, :class:`EpochLossMeans` puts their epoch means into ``engine.state.metrics`` (printed
and plotted per epoch), and :class:`ProgressBar` draws ignite's bar when the console is a terminal.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from enum import Enum
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["loss_terms", "loss_values", "EpochLossMeans", "ProgressBar"]


def _is_loss_key(key: str) -> bool:
    return key == "loss" or key.endswith("_loss")


def loss_values(output: Any) -> dict[str, Any]:
    """``loss`` and every one-number ``*_loss`` entry of a trainer's output, as they are (tensors stay on
    their device); a decollated output (a list of per-item dicts, each with the batch loss) is read
    from its first item."""
    if isinstance(output, (list, tuple)):
        output = output[0] if output else {}
    if not isinstance(output, Mapping):
        return {}
    values: dict[str, Any] = {}
    for key, value in output.items():
        if not (isinstance(key, str) and _is_loss_key(key)):
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() == 1:
                values[key] = value.detach().float().reshape(())
        elif isinstance(value, (int, float)):
            values[key] = float(value)
    return values


def loss_terms(output: Any, prefix: str = "train_") -> dict[str, float]:
    """``{"train_loss": ..., "train_model_loss": ..., ...}`` from a trainer's output dict (see :func:`loss_values`)."""
    return {f"{prefix}{key}": float(value) for key, value in loss_values(output).items()}


def _plain_name(name: Any) -> str:
    return name.value if isinstance(name, Enum) else str(name)


class EpochLossMeans:
    """Mean of each loss term (``loss``, ``*_loss``) over an epoch, stored as ``engine.state.metrics["epoch_train_<name>"]``.

    Put it in the trainer's handlers before ``StatsHandler``/``TensorBoardStatsHandler`` so their
    epoch logs include the means. The sums stay on the loss's device and are read once per epoch, so
    the training step never waits for the GPU here. Non-finite losses are reported as NaN, not hidden.
    Checkpointed (``state_dict``), so the mean of an epoch resumed in its middle covers the whole epoch.
    """

    def __init__(self, prefix: str = "epoch_train_") -> None:
        self.prefix = prefix
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.completed)

    def reset(self, engine: Engine | None = None) -> None:
        if engine is not None and engine.state.epoch_length and engine.state.iteration % engine.state.epoch_length:
            return  # resumed in the middle of an epoch: keep the sums restored from the checkpoint
        self.sums, self.counts = {}, {}

    def state_dict(self) -> dict[str, Any]:
        """The epoch's sums so far (read from the device here, at checkpoint time only) and counts."""
        # Plain-string names (the trainer's "loss" key is MONAI's CommonKeys enum), so weights_only loads them.
        return {"sums": {_plain_name(name): float(total) for name, total in self.sums.items()},
                "counts": {_plain_name(name): n for name, n in self.counts.items()}}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.sums = {name: float(total) for name, total in state_dict.get("sums", {}).items()}
        self.counts = {name: int(n) for name, n in state_dict.get("counts", {}).items()}

    def update(self, engine: Engine) -> None:
        for name, value in loss_values(engine.state.output).items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1

    def completed(self, engine: Engine) -> None:
        for name, total in self.sums.items():
            mean = float(total) / self.counts[name]
            engine.state.metrics[f"{self.prefix}{name}"] = mean if math.isfinite(mean) else float("nan")


class ProgressBar:
    """Ignite's tqdm progress bar for a trainer (showing the loss terms) or an evaluator.

    ``enabled=None`` draws it only when stderr is a terminal, so logs written to files and CI
    output stay line-based (the per-iteration and per-epoch log lines show progress there).
    """

    def __init__(self, enabled: bool | None = None, show_losses: bool = True, persist: bool = False, desc: str = "") -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.show_losses, self.persist, self.desc = show_losses, persist, desc
        self.bar: Any = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        from ignite.handlers import ProgressBar as IgniteProgressBar

        self.bar = IgniteProgressBar(persist=self.persist, desc=self.desc)
        self.bar.attach(engine, output_transform=loss_terms if self.show_losses else None)
