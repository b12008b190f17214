"""The Ignite trainer: a MONAI ``SupervisedTrainer`` whose iteration hands the batch's label sets to a strategy.

The trainer never branches on the strategy: it runs the network once, asks the strategy for a
loss (``single``, ``majority``, ``mean``, ``dawid_skene``, ``cm`` or ``l2v``), back-propagates
it, and fires MONAI's ``IterationEvents`` so postprocessing, metrics and handlers see the output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch.nn.parallel import DistributedDataParallel

from l2v_monai.strategies import Strategy, noisy_target

__all__ = ["LearningToVoteTrainer", "LabelSetBatch", "unwrap", "to_device"]


def unwrap(network: nn.Module) -> nn.Module:
    """The plain module under a DDP/DataParallel wrapper."""
    return network.module if isinstance(network, (DistributedDataParallel, nn.DataParallel)) else network


def to_device(batch: dict, device: torch.device | str, non_blocking: bool = False) -> dict:
    """Move every tensor of a collated batch to ``device``; MetaTensors become plain tensors."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.as_tensor() if hasattr(value, "as_tensor") else value
            out[key] = value.to(device, non_blocking=non_blocking)
        else:
            out[key] = value
    return out


def forward_with_features(network: nn.Module, image: torch.Tensor, report: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the network once and return ``(logits, features)``.

    The call goes through ``network(...)`` so that a DDP wrapper sees a forward pass (it needs one
    to synchronise gradients); the features are tapped at the input of the ``head`` module.
    """
    core = unwrap(network)
    head = getattr(core, "head", None)
    if not isinstance(head, nn.Module):
        features = core.features(image, report)
        return core.head(features), features
    captured: dict[str, torch.Tensor] = {}
    handle = head.register_forward_hook(lambda _m, inputs, _o: captured.__setitem__("features", inputs[0]))
    try:
        logits = network(image, report)
    finally:
        handle.remove()
    return logits, captured["features"]


class LearningToVoteTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose loss comes from a label :class:`~l2v_monai.strategies.Strategy`.

    Batches are dictionaries with ``image`` (``B × C × H × W``), ``labels`` (``B × M × N``, NaN =
    missing) and optionally ``report_embedding`` and strategy-specific keys (``target``).
    ``engine.state.output`` holds ``image``, ``label`` (the target the strategy trained toward),
    ``pred`` (logits), ``loss``, plus ``vote_weights`` and ``labels`` for diagnostics, and the
    strategy's extra losses (``StrategyOutput.extras``, e.g. ``model_loss``, ``probe_loss``).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        strategy: Strategy,
        image_key: str = "image",
        labels_key: str = "labels",
        report_key: str = "report_embedding",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=strategy,
            **kwargs,
        )
        self.strategy = strategy.to(device)
        # Under DDP the strategy's own parameters (vote head, confusion matrices) must be averaged
        # across ranks like the network's, or each rank would learn its own vote.
        self.strategy_call: nn.Module = self.strategy
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
            and any(p.requires_grad for p in self.strategy.parameters())
        ):
            dev = torch.device(device)
            self.strategy_call = DistributedDataParallel(self.strategy, device_ids=[dev] if dev.type == "cuda" else None)
        self.image_key, self.labels_key, self.report_key = image_key, labels_key, report_key

    def _iteration(self, engine: LearningToVoteTrainer, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = to_device(batchdata, engine.state.device, engine.non_blocking)
        image = batch[self.image_key].float()
        batch[self.image_key] = image
        batch["labels"] = batch[self.labels_key].float()
        report = batch.get(self.report_key)
        if report is not None:
            report = report.float()
            batch["report_embedding"] = report
        engine.state.output = {Keys.IMAGE: image, Keys.LABEL: None}

        engine.network.train()
        self.strategy.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        use_amp = bool(engine.amp and engine.scaler is not None)
        if use_amp:
            self.strategy.grad_scale = float(engine.scaler.get_scale())
        with torch.autocast("cuda", **engine.amp_kwargs, enabled=use_amp):
            logits, features = forward_with_features(engine.network, image, report)
            engine.state.output[Keys.PRED] = logits
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            result = self.strategy_call(batch, logits, features, unwrap(engine.network))
            engine.state.output[Keys.LOSS] = result.loss
            engine.state.output[Keys.LABEL] = result.target
            engine.state.output["vote_weights"] = result.weights
            engine.state.output["labels"] = batch["labels"]
            # The strategy's own loss terms (model_loss, probe_loss, ...) sit beside "loss" so that
            # handlers can log them (l2v_monai.progress.loss_terms); the trainer's keys win a clash.
            for name, value in result.extras.items():
                engine.state.output.setdefault(name, value.detach() if isinstance(value, torch.Tensor) else value)
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if use_amp:
            engine.scaler.scale(result.loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            result.loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.state.output[Keys.PRED] = logits.detach()
        engine.state.output[Keys.LOSS] = result.loss.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class LabelSetBatch:
    """``prepare_batch`` for MONAI evaluators: ``(image, label, (), {"report_embedding": ...})``.

    ``label`` is the clean ``label`` key when ``target="clean"`` (hand-labelled sets), otherwise a
    label built from the noisy ``labels`` sets: ``"majority"`` (ties left NaN, so noisy validation
    is deterministic and only scores samples with a majority) or ``"mean"``.
    """

    def __init__(self, target: str = "majority", multiclass: bool = False, report_key: str = "report_embedding") -> None:
        if target not in ("clean", "majority", "mean"):
            raise ValueError(f"unknown evaluation target {target!r}; choose clean, majority or mean")
        self.target, self.multiclass, self.report_key = target, multiclass, report_key

    def label(self, batch: dict) -> torch.Tensor:
        if self.target == "clean":
            if "label" not in batch:
                raise KeyError(
                    "evaluation target 'clean' needs the hand labels under 'label' in every item: "
                    "evaluate on a hand-labelled datalist (scripts/prepare_mimic.py hand-labels, prepare_openi.py)"
                )
            return batch["label"].float()
        return noisy_target(batch["labels"].float(), self.target, self.multiclass)

    def __call__(self, batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False, **_: Any):
        batch = to_device(batchdata, device or "cpu", non_blocking)
        kwargs: dict[str, Any] = {}
        if batch.get(self.report_key) is not None:
            kwargs["report_embedding"] = batch[self.report_key].float()
        return batch["image"].float(), self.label(batch), (), kwargs
