"""The Ignite trainer: a MONAI ``SupervisedTrainer`` whose loss comes from a label strategy.

Each iteration follows ``SupervisedTrainer._iteration``: ``engine.prepare_batch`` (default
:class:`StrategyBatch`), then the forward pass through ``engine.inferer`` (default
``SimpleInferer``), then the loss, which here is the strategy's (``single``, ``majority``,
``mean``, ``dawid_skene``, ``cm``, ``consensus`` or ``l2v``, see :mod:`l2v_monai.strategies`). The
strategy also needs the features at the input of ``network.head``: a forward hook taps them while
the inferer runs the network. The trainer never branches on the strategy, and it fires MONAI's
``IterationEvents`` so postprocessing, metrics and handlers see the output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn as nn
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, PrepareBatch
from monai.utils.enums import CommonKeys as Keys
from torch.nn.parallel import DistributedDataParallel

from l2v_monai.engine.nonfinite import non_finite_error
from l2v_monai.labels import noisy_target
from l2v_monai.strategies import Strategy

__all__ = ["LearningToVoteTrainer", "StrategyBatch", "LabelSetBatch", "HeadFeatures", "unwrap", "to_device"]


def unwrap(network: nn.Module) -> nn.Module:
    """The plain module under a DDP/DataParallel wrapper."""
    return network.module if isinstance(network, (DistributedDataParallel, nn.DataParallel)) else network


def to_device(batch: dict, device: torch.device | str, non_blocking: bool = False, **to_kwargs: Any) -> dict:
    """Move every tensor of a collated batch to ``device`` (``to_kwargs``: more ``Tensor.to`` arguments);
    MetaTensors become plain tensors."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.as_tensor() if hasattr(value, "as_tensor") else value
            out[key] = value.to(device, non_blocking=non_blocking, **to_kwargs)
        else:
            out[key] = value
    return out


class StrategyBatch(PrepareBatch):
    """The trainer's default ``prepare_batch``: ``(image, label sets, (), {"report_embedding": ...})``.

    The "label" is a dict, what the strategy reads besides the image: ``labels`` (``B × M × N``,
    float, NaN = missing) and every other key of the batch (the fitted ``target`` among them).
    The report embedding, when the batch has one, is the network's keyword input.
    """

    def __init__(self, image_key: str = "image", labels_key: str = "labels", report_key: str = "report_embedding") -> None:
        self.image_key, self.labels_key, self.report_key = image_key, labels_key, report_key

    def __call__(
        self, batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, dict, tuple, dict]:
        batch = to_device(batchdata, device or "cpu", non_blocking, **kwargs)
        image = batch.pop(self.image_key).float()
        report = batch.pop(self.report_key, None)
        batch["labels"] = batch.pop(self.labels_key).float()
        network_kwargs = {} if report is None else {"report_embedding": report.float()}
        return image, batch, (), network_kwargs


class LabelSetBatch(PrepareBatch):
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

    def __call__(
        self, batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        batch = to_device(batchdata, device or "cpu", non_blocking, **kwargs)
        network_kwargs: dict[str, Any] = {}
        if batch.get(self.report_key) is not None:
            network_kwargs["report_embedding"] = batch[self.report_key].float()
        return batch["image"].float(), self.label(batch), (), network_kwargs


class HeadFeatures:
    """Taps the features at the input of ``network.head`` while an inferer runs the network.

    ``with tap: logits = inferer(image, network)`` then ``tap.features()``. The hook sits on the
    head, so the call still goes through ``network(...)`` (a DDP wrapper sees its forward pass) and
    any inferer works that runs the network once per step.
    """

    def __init__(self, network: nn.Module) -> None:
        head = getattr(unwrap(network), "head", None)
        if not isinstance(head, nn.Module):
            raise TypeError(
                f"{type(unwrap(network)).__name__} has no 'head' module: the trainer taps the features the strategies "
                "need at the input of network.head (see l2v_monai.bundle_scripts.networks for the network API)"
            )
        self.head = head
        self._captured: list[torch.Tensor] = []
        self._handle: Any = None

    def __enter__(self) -> HeadFeatures:
        self._captured = []
        self._handle = self.head.register_forward_hook(lambda _m, inputs, _o: self._captured.append(inputs[0]))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()

    def features(self) -> torch.Tensor:
        if len(self._captured) != 1:
            raise RuntimeError(
                f"the inferer ran network.head {len(self._captured)} times in one step; the strategy needs the "
                "features of exactly one forward pass"
            )
        return self._captured[0]


class LearningToVoteTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose loss comes from a label :class:`~l2v_monai.strategies.Strategy`.

    ``prepare_batch`` returns ``(image, label sets, args, kwargs)`` (default :class:`StrategyBatch`;
    a custom one may return the ``B × M × N`` label sets alone instead of the dict), and
    ``inferer(image, network, *args, **kwargs)`` gives the logits (default ``SimpleInferer``).
    The strategy sees ``batch = {**kwargs, **label sets, "image": image}``, the logits, the
    features at the input of ``network.head`` and, under AMP, the loss scale as ``grad_scale``.

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
        prepare_batch: Callable | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("accumulation_steps", 1) != 1:
            raise ValueError("LearningToVoteTrainer takes one optimizer step per batch; accumulation_steps must be 1")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=strategy,
            prepare_batch=StrategyBatch() if prepare_batch is None else prepare_batch,
            **kwargs,
        )
        self.strategy = strategy.to(device)
        self.head_features = HeadFeatures(self.network)
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

    def _iteration(self, engine: LearningToVoteTrainer, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        prepared = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        image, label_sets, args, kwargs = prepared if len(prepared) == 4 else (*prepared, (), {})
        if not isinstance(label_sets, Mapping):
            label_sets = {"labels": label_sets}
        batch = {**kwargs, **label_sets, "image": image}
        engine.state.output = {Keys.IMAGE: image, Keys.LABEL: None}

        engine.network.train()
        self.strategy.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        use_amp = bool(engine.amp and engine.scaler is not None)
        # The vote's virtual step takes gradients of its own; under AMP they are taken on the loss
        # scaled like the trainer's backward, so fp16 gradients do not underflow.
        grad_scale = float(engine.scaler.get_scale()) if use_amp else 1.0
        with torch.autocast("cuda", **engine.amp_kwargs, enabled=use_amp):
            with self.head_features:
                logits = engine.inferer(image, engine.network, *args, **kwargs)
            features = self.head_features.features()
            engine.state.output[Keys.PRED] = logits
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            try:
                result = self.strategy_call(batch, logits, features, unwrap(engine.network), grad_scale=grad_scale)
            except RuntimeError as err:
                # NaN logits make some losses raise (BCE on NaN probabilities) instead of returning NaN:
                # say what went bad and where, as for a NaN loss; checked only on failure, so free.
                if not bool(torch.isfinite(logits.detach()).all()):
                    raise non_finite_error(engine, {"pred (the network's output)": "nan/inf",
                                                    "train_loss": f"not computed ({err})"}) from err
                raise
            engine.state.output[Keys.LOSS] = result.loss
            engine.state.output[Keys.LABEL] = result.target
            engine.state.output["vote_weights"] = result.weights
            engine.state.output["labels"] = batch["labels"]
            # The strategy's own loss terms (model_loss, probe_loss, ...) sit beside "loss" so that
            # handlers can log them (l2v_monai.engine.progress.loss_terms); the trainer's keys win a clash.
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
