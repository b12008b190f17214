"""The strategy interface: one ``forward(batch, logits, features, network)`` per strategy, one output type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from l2v_monai.strategies import vote as v

__all__ = ["StrategyOutput", "Strategy", "TARGET_KEY", "HAND_KEY", "trust_hand"]

#: The batch key under which dataset-level targets fitted before training travel with the items
#: (:func:`~l2v_monai.strategies.attach_targets`): Dawid–Skene's labels, the consensus, the vote's anchor.
TARGET_KEY = "target"

#: The batch key of the hand labels (``B × N``, NaN = none): the datalist's ``label`` field on training
#: items (written by :mod:`l2v_monai.quality.hand_labels`). Every strategy trusts them: where an entry has a
#: hand label, that label is the target (and the vote's anchor); elsewhere nothing changes.
HAND_KEY = "label"


def trust_hand(batch: dict, target: torch.Tensor) -> torch.Tensor:
    """``target`` with the batch's hand labels in place wherever an entry has one (unchanged without any)."""
    hand = batch.get(HAND_KEY)
    if hand is None:
        return target
    hand = torch.as_tensor(hand, device=target.device).to(target.dtype)
    return torch.where(torch.isnan(hand), target, hand)


@dataclass
class StrategyOutput:
    """What a strategy returns for one batch.

    ``target`` (``B × N``, NaN where undefined, detached) is exactly the label the model's loss
    trained toward: ``loss == masked_bce(logits, target)`` (or the soft CE for one-hot data) for the
    fixed-target strategies and the paper's vote; ``extras["model_loss"]`` is that loss for the
    anchored vote (whose total adds the vote's terms); for ``cm`` the gradient of the loss in the
    logits is that of a weighted CE against ``target`` (see :class:`~l2v_monai.strategies.ConfusionMatrices`).
    ``weights`` the vote weights when the strategy votes; ``extras`` the loss's named terms as
    detached scalars (``model_loss``, ``vote_loss``, ``probe_loss``, ``annotator_loss``...), for logging.
    """

    loss: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Strategy(nn.Module):
    """Base class. ``multiclass`` means one-hot label sets (the CIFAR proof of concept).

    ``forward(batch, logits, features, network, grad_scale=1.0)``: ``batch`` holds ``image``,
    ``labels`` (``B × M × N``, NaN = missing), the network's extra inputs (``report_embedding``) and
    the fitted ``target`` when the strategy has one, and the hand labels (``label``) when any item
    has them (:func:`trust_hand`: the hand label is the target where present); ``logits`` and ``features`` come from one
    forward pass; ``network`` is the plain (unwrapped) module. ``grad_scale`` is the AMP loss scale
    the trainer back-propagates with: a strategy that takes gradients of its own (the vote's
    virtual step) scales by it so that fp16 gradients do not underflow; the others ignore it.
    """

    #: Name used in configs and results.
    name: str = "strategy"

    def __init__(self, multiclass: bool = False) -> None:
        super().__init__()
        self.multiclass = multiclass

    def param_groups(self, network: nn.Module, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the network's, plus the strategy's own when it has any."""
        groups: list[dict[str, Any]] = [{"params": [p for p in network.parameters() if p.requires_grad], "lr": lr}]
        own = [p for p in self.parameters() if p.requires_grad]
        if own:
            groups.append({"params": own, "lr": lr})
        return groups

    def aggregate(self, labels: np.ndarray) -> np.ndarray | None:
        """Dataset-level targets (``S × N``) fitted once before training, or None for on-the-fly strategies."""
        return None

    def forward(
        self, batch: dict, logits: torch.Tensor, features: torch.Tensor, network: nn.Module, grad_scale: float = 1.0
    ) -> StrategyOutput:
        raise NotImplementedError

    def _fixed_target_output(self, logits: torch.Tensor, target: torch.Tensor) -> StrategyOutput:
        return StrategyOutput(loss=v.masked_bce(logits, target), target=target.detach())
