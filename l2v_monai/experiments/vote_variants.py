"""The anchored vote and its ablations, shared by the three reproduction scripts .

Every variant is the bundle's own ``strategy_options#l2v`` (``train.json``; ``cifar10.json`` holds
the same block) with a few keys changed, so a table row names exactly what was switched off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from l2v_monai.strategies.vote import VOTE_INPUTS

CONFIG = Path(__file__).resolve().parents[2] / "bundle" / "configs" / "train.json"


def _without(*parts: str) -> list[str]:
    return [x for x in VOTE_INPUTS if x not in parts]


#: The defaults of the one vote class before it split into one class per variant, spelled
#: out, so that rows written as changes to them (the bench's, the multi-label testbed's first rows) keep their meaning.
PRE_SPLIT_ANCHORED: dict[str, Any] = {"variant": "anchored", "vote_objective": "meta", "consensus": "dawid_skene",
                                      "min_confidence": 0.9, "refined": "hard", "feedback": "features", "vote_lr": None}

#: The release before the anchored default as changes to today's default, so rows made with it keep their meaning.
PREVIOUS_TRAIN: dict[str, Any] = {"consensus": "majority", "min_confidence": 1.0, "refined": "soft", "feedback": "features"}
PREVIOUS_CIFAR10: dict[str, Any] = {"vote_objective": "meta", "min_confidence": 0.9, "feedback": "features"}

#: name → (changes to the anchored vote's options (strategy_options#l2v), what the row measures).
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "l2v_default": ({}, "the anchored vote (strategy_options#l2v of train.json and cifar10.json)"),
    "abl_no_features": ({"inputs": _without("features")}, "vote input without the sample's features F"),
    "abl_no_labels": ({"inputs": _without("labels")}, "vote input without the sets' labels y_m"),
    "abl_no_agreement": ({"inputs": _without("agreement")}, "vote input without each set's agreement with the others"),
    "abl_no_model": ({"inputs": _without("model")}, "vote input without the model's probability of y_m"),
    "abl_no_probe": ({"inputs": _without("probe")}, "vote input without the probe's probability of y_m"),
    "abl_no_set": ({"inputs": _without("set")}, "vote input without which set it is"),
    "abl_virtual_step": ({"feedback": "features"}, "with the paper's virtual step per set (ΔF_m in the input)"),
    "abl_anchor_unanimous": ({"consensus": "majority", "min_confidence": 1.0}, "anchor: unanimous entries"),
    "abl_anchor_ds_09": ({"min_confidence": 0.9}, "anchor: Dawid–Skene decisions with posterior ≥ 0.9 (not 0.999)"),
    "abl_anchor_ds_09999": ({"min_confidence": 0.9999}, "anchor: Dawid–Skene decisions with posterior ≥ 0.9999"),
    "abl_anchor_ds_posterior": ({"consensus": "dawid_skene_posterior"}, "anchor: Dawid–Skene posterior on every entry"),
    "abl_soft": ({"refined": "soft"}, "soft refined labels (the vote's mixture)"),
    "abl_vote_lr_low": ({"vote_lr": None}, "vote at the model's learning rate (10× lower: a lower vote-loss weight)"),
    "abl_meta": ({"vote_objective": "meta"}, "the bilevel (meta) vote objective instead of the probe"),
    # The defaults of the release before the anchored default, for the report tables.
    "l2v_previous_train": (PREVIOUS_TRAIN, "previous train.json vote (unanimous anchor, soft, virtual step)"),
    "l2v_previous_cifar10": (PREVIOUS_CIFAR10, "previous cifar10.json vote (meta objective, Dawid–Skene ≥ 0.9, virtual step)"),
}


def default_options(seed: int) -> dict[str, Any]:
    """``strategy_options#l2v`` as the bundle gives it for ``seed``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(CONFIG)
    parser["seed"] = seed
    return dict(parser.get_parsed_content("strategy_options#l2v"))


def variant_options(name: str, seed: int) -> dict[str, Any]:
    """The options of one :data:`VARIANTS` row."""
    return {**default_options(seed), **VARIANTS[name][0]}
