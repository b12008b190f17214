"""Label strategies: how a batch's M label sets become one training loss.

Every strategy is an ``nn.Module`` with one entry point,
``forward(batch, logits, features, network, grad_scale=1.0) -> StrategyOutput``
(:mod:`~l2v_monai.strategies.base`), so the trainer never branches on which one it runs.
Strategies with learnable parameters (the vote, confusion matrices) expose them through
:meth:`Strategy.param_groups`, which the optimizer is built from.

Baselines (:mod:`~l2v_monai.strategies.baselines`):

* ``single`` — one named label set.
* ``majority`` — majority vote; ties broken at random per iteration (as the paper does), or set to 1
  (``ties="positive"``), or left out (``"nan"``).
* ``mean`` — the soft average of the available label sets.
* ``dawid_skene`` — Dawid–Skene aggregation (crowd-kit), fitted once before training.
* ``cm`` — Tanno et al. (2019): a learnable confusion matrix per annotator.
* ``consensus`` — only the entries where the sets confidently agree (unanimous by default).
* ``overrule`` — majority vote, overruled on contested entries by the model's confident prediction.

Learning-to-vote (:mod:`~l2v_monai.strategies.learning_to_vote`, the math in :mod:`l2v_monai.strategies.vote`):

* ``posterior_vote`` — :class:`PosteriorVote`: each set weighed by its learned confusion matrix
  and the model's own prediction of the sample as one more voter.
* ``l2v`` — :class:`AnchoredVote` (``variant: "anchored"``) or :class:`PaperVote`
  (``variant: "paper"``, the paper as written).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from l2v_monai.labels import stack_hand_labels, stack_labels
from l2v_monai.strategies import base, baselines, learning_to_vote
from l2v_monai.strategies.base import HAND_KEY, TARGET_KEY, Strategy, StrategyOutput, trust_hand
from l2v_monai.strategies.baselines import (
    ConfusionMatrices,
    Consensus,
    DawidSkene,
    FittedTargets,
    MajorityVote,
    MeanLabel,
    ModelOverrule,
    SingleLabelSet,
    consensus_targets,
)
from l2v_monai.strategies.learning_to_vote import (
    VOTE_VARIANTS,
    AnchoredVote,
    LearningToVote,
    PaperVote,
    PosteriorVote,
    vote_from_options,
)

__all__ = [*base.__all__, *baselines.__all__, *learning_to_vote.__all__, "STRATEGIES", "build_strategy", "attach_targets"]

#: ``label_strategy`` → its class (``l2v``: the base of the vote variants, picked by ``variant``).
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (SingleLabelSet, MajorityVote, MeanLabel, DawidSkene, ConfusionMatrices, Consensus, ModelOverrule, LearningToVote,
                PosteriorVote)
}


def build_strategy(
    name: str,
    *,
    num_sets: int,
    num_outputs: int,
    feature_dim: int,
    multiclass: bool = False,
    label_sets: Sequence[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> Strategy:
    """Build the strategy selected by one config key (``label_strategy``).

    ``options`` maps a strategy name to its keyword arguments, so a bundle config keeps every
    strategy's settings side by side and switching strategy is a one-key change. For ``l2v`` the
    block's ``variant`` key picks the class (:func:`~l2v_monai.strategies.learning_to_vote.vote_from_options`).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown label_strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    kwargs = dict((options or {}).get(name, {}))
    kwargs["multiclass"] = multiclass
    if name == "single":
        kwargs.setdefault("label_sets", label_sets)
    if name in ("cm", "posterior_vote"):
        kwargs.update(num_sets=num_sets, num_outputs=num_outputs)
    if name == "l2v":
        return vote_from_options(**kwargs, num_sets=num_sets, num_outputs=num_outputs, feature_dim=feature_dim)
    return STRATEGIES[name](**kwargs)


def attach_targets(
    items: list[dict],
    strategy: Strategy,
    labels_key: str = "labels",
    num_sets: int | None = None,
    num_outputs: int | None = None,
    split: str = "training",
) -> list[dict]:
    """Return the items with dataset-level targets attached (key ``target``) when the strategy fits them.

    For on-the-fly strategies the items are returned unchanged. Fitting happens here, once,
    before training, so the training step never re-aggregates the dataset. Items with hand labels
    (``label``, N values, null = none; :func:`hand_labels`) make a trusted set: their values replace
    the fitted targets where present, and every item then carries ``label`` as float32 (NaN = none)
    so that each training step trusts them too; without hand labels nothing changes. Every item's labels are
    checked first (``num_sets × num_outputs`` when given, values in [0, 1] or null): a bad item is
    a ``LabelValueError`` naming it by split, index and image, not a bare numpy error.
    """
    if not items:
        return items
    stacked = stack_labels(items, labels_key, (num_sets, num_outputs), split=split)
    targets = strategy.aggregate(stacked)
    hand = hand_labels(items, stacked.shape[2], split)
    if hand is not None:
        # A trusted set: the hand label wins where present, in the fitted targets (Dawid–Skene, the
        # consensus, the vote's anchor) and, through the batch's "label", in every strategy's step.
        # Every item carries the key (NaN where none), so that any batch collates.
        if targets is not None:
            targets = np.where(np.isnan(hand), targets, hand).astype(np.float32)
        items = [{**it, HAND_KEY: h} for it, h in zip(items, hand)]
    if targets is None:
        return items
    return [{**it, TARGET_KEY: t} for it, t in zip(items, targets)]


def hand_labels(items: Sequence[Any], num_outputs: int | None = None, split: str = "training") -> np.ndarray | None:
    """The items' hand labels (their ``label``, ``S × N`` float32, NaN = none), or None when no item has one.

    Items without the key, or with ``null``, have none. A malformed hand label (a shape other than
    ``N``, a value outside [0, 1]) is a ``LabelValueError`` naming the item by split, index and image.
    """
    present = [it.get(HAND_KEY) is not None for it in items if isinstance(it, dict)]
    if not any(present):
        return None
    if num_outputs is None:
        num_outputs = len(next(it[HAND_KEY] for it in items if it.get(HAND_KEY) is not None))
    hand = stack_hand_labels(items, num_outputs, HAND_KEY, split)
    return None if np.isnan(hand).all() else hand
