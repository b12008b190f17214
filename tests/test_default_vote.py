"""The default strategy of train.json and cifar10.json (the posterior vote), and the anchored vote's mechanics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from l2v_monai.strategies import vote as v
from l2v_monai.strategies import AnchoredVote, PosteriorVote, attach_targets, build_strategy, consensus_targets
from tiny_nets import CountingNet, report_like_sets, train_steps

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"


def _parsed(config: str, key: str, seed: int = 0):
    parser = ConfigParser()
    parser.read_config(CONFIGS / config)
    parser["seed"] = seed
    return parser.get_parsed_content(key)


def _l2v_options(config: str, seed: int = 0) -> dict:
    return dict(_parsed(config, "strategy_options#l2v", seed))


def test_train_and_poc_configs_share_one_default_strategy() -> None:
    # The strategy chosen on the robustness suite's development seeds (docs/vote.md).
    assert _parsed("train.json", "label_strategy") == _parsed("cifar10.json", "label_strategy") == "posterior_vote"
    train, poc = (dict(_parsed(c, "strategy_options#posterior_vote")) for c in ("train.json", "cifar10.json"))
    assert train == poc == {"warmup_epochs": 1.0, "memory_epochs": 1.0, "smoothing": 1.0, "refined": "soft", "sets": "auto",
                            "min_confidence": None, "shrinkage": 20.0}
    # The block builds the vote with nothing left out: every key is one of its options.
    strategy = build_strategy("posterior_vote", num_sets=4, num_outputs=14, feature_dim=8, options={"posterior_vote": train})
    assert isinstance(strategy, PosteriorVote) and strategy.sets == "joint" and strategy.min_confidence == 0.9


def test_the_anchored_vote_stays_a_named_option_with_its_chosen_settings() -> None:
    train, poc = _l2v_options("train.json", 3), _l2v_options("cifar10.json", 3)
    assert train == poc
    # Its settings from its own development seeds: the probe objective on a confident Dawid–Skene
    # anchor, hard refined labels, no virtual step; the run's seed reaches the vote.
    assert {k: train[k] for k in ("variant", "vote_objective", "consensus", "min_confidence", "refined", "feedback", "seed")} == {
        "variant": "anchored", "vote_objective": "probe", "consensus": "dawid_skene", "min_confidence": 0.999,
        "refined": "hard", "feedback": "none", "seed": 3}


def _anchored_strategy(net: torch.nn.Module, num_sets: int, num_outputs: int, multiclass: bool = False) -> AnchoredVote:
    return build_strategy("l2v", num_sets=num_sets, num_outputs=num_outputs, feature_dim=net.num_features,
                          multiclass=multiclass, options={"l2v": _l2v_options("train.json")})


def test_anchored_step_has_no_virtual_step_and_trains_toward_its_hard_target() -> None:
    torch.manual_seed(0)
    sets, _ = report_like_sets(64)
    net = CountingNet(num_outputs=2)
    strategy = _anchored_strategy(net, 4, 2)
    items = attach_targets([{"labels": s} for s in sets], strategy)
    anchor = torch.from_numpy(np.stack([it["target"] for it in items]))
    # The anchor is Dawid–Skene's decision where its posterior is ≥ 0.999 (NaN elsewhere).
    assert torch.equal(torch.isnan(anchor), torch.from_numpy(np.isnan(consensus_targets(sets, "dawid_skene", 0.999, False))))
    image = torch.rand(64, 1, 6, 6)
    features = net.features(image)
    logits = net.head(features)
    net.passes = 0
    out = strategy({"image": image, "labels": torch.from_numpy(sets), "target": anchor}, logits, features, net)
    # No virtual step: not one extra feature pass (the paper's step costs M more).
    assert net.passes == 0
    # Hard refined labels, and the model loss is BCE against exactly them.
    assert set(out.target.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(out.extras["model_loss"], v.masked_bce(logits, out.target), atol=1e-6)
    # The vote's own loss (probe + agreement) is reported beside the model's.
    assert set(out.extras) == {"model_loss", "probe_loss", "agreement_loss", "vote_loss"}
    # Only the vote and the probe learn from the anchor; the model's gradient is its own loss's.
    net.zero_grad()
    out.loss.backward()
    grad_full = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    v.masked_bce(net.head(net.features(image)), out.target).backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(grad_full, net.parameters()))


def test_anchored_vote_learns_to_follow_its_anchor_on_a_seeded_case() -> None:
    """After training, the refined labels agree with the anchor wherever it has a value."""
    # Images whose brightness encodes the truth (finding 0 → +1, finding 1 → +2), so the probe has something to read.
    out, anchor, _, _ = _trained_on_pictures_of_the_truth(seed=1)
    has = ~torch.isnan(anchor)
    assert (out.target[has] == anchor[has]).float().mean() > 0.98


@pytest.mark.parametrize("dropped", v.VOTE_INPUTS)
def test_each_vote_input_can_be_dropped_for_the_ablations(dropped: str) -> None:
    torch.manual_seed(0)
    sets, _ = report_like_sets(8)
    net = CountingNet(num_outputs=2)
    inputs = [x for x in v.VOTE_INPUTS if x != dropped]
    strategy = AnchoredVote(num_sets=4, feature_dim=net.num_features, num_outputs=2, inputs=inputs)
    features = net.features(torch.rand(8, 1, 6, 6))
    labels = torch.from_numpy(sets)
    full = v.set_descriptors(features, features.unsqueeze(1).expand(-1, 4, -1), labels, net.head(features), False,
                             strategy.probe(features))
    part = v.set_descriptors(features, features.unsqueeze(1).expand(-1, 4, -1), labels, net.head(features), False,
                             strategy.probe(features), inputs)
    width = {"features": net.num_features, "feedback": net.num_features, "set": 4}.get(dropped, 2)
    assert part.shape[-1] == full.shape[-1] - width == v.descriptor_dim(net.num_features, 4, 2, False, True, inputs)
    out = strategy({"image": torch.rand(8, 1, 6, 6), "labels": labels, "target": torch.full((8, 2), float("nan"))},
                   net.head(features), features, net)
    assert out.weights.shape == (8, 4, 2)


def test_unknown_or_empty_vote_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="vote inputs"):
        AnchoredVote(num_sets=2, feature_dim=4, num_outputs=1, inputs=["features", "gradients"])
    with pytest.raises(ValueError, match="vote inputs"):
        AnchoredVote(num_sets=2, feature_dim=4, num_outputs=1, inputs=[])



def _default_strategy(net: torch.nn.Module, num_sets: int, num_outputs: int):
    """The strategy train.json trains with, built from its own label_strategy and options block."""
    name = _parsed("train.json", "label_strategy")
    options = {name: dict(_parsed("train.json", f"strategy_options#{name}"))}
    return build_strategy(name, num_sets=num_sets, num_outputs=num_outputs, feature_dim=net.num_features, options=options)


def _trained_on_pictures_of_the_truth(build=_anchored_strategy, seed: int = 2):
    """A strategy trained on report-like sets whose pictures show the truth; (output, anchor, sets, truth).

    ``anchor`` is the fitted target the strategy attached (all NaN for one that fits none)."""
    torch.manual_seed(0)
    sets, truth = report_like_sets(256, seed=seed)
    net = CountingNet(num_outputs=2)
    strategy = build(net, 4, 2)
    items = attach_targets([{"labels": s} for s in sets], strategy)
    anchor = torch.from_numpy(np.stack([it["target"] for it in items])) if "target" in items[0] else torch.full((256, 2), float("nan"))
    level = torch.from_numpy(truth[:, 0] + 2 * truth[:, 1]).view(-1, 1, 1, 1)
    image = level.expand(-1, 1, 6, 6) + 0.1 * torch.rand(256, 1, 6, 6)
    out = train_steps(strategy, net, image, torch.from_numpy(sets), anchor)
    return out, anchor, sets, torch.from_numpy(truth)


def test_default_refined_labels_beat_majority_vote_and_dawid_skene_where_the_sets_disagree() -> None:
    """The default as train.json builds it. Report-like sets miss positives together; the pictures show the
    truth. Where the sets disagree the vote must beat majority vote (ties → 1) and Dawid–Skene's decision
    (it sees the picture), and where Dawid–Skene is confident (≥ 0.999) be at least as accurate as it."""
    out, _, sets, truth = _trained_on_pictures_of_the_truth(_default_strategy)
    refined_right = ((out.target >= 0.5).float() == truth).float()
    contested = torch.from_numpy(sets.min(axis=1) != sets.max(axis=1))
    assert contested.sum() >= 10
    mv_right = ((torch.from_numpy(sets).mean(dim=1) >= 0.5).float() == truth).float()
    ds = torch.from_numpy(consensus_targets(sets, "dawid_skene", 0.0, False))
    ds_right = ((ds >= 0.5).float() == truth).float()
    assert refined_right[contested].mean() > max(mv_right[contested].mean(), ds_right[contested].mean())
    confident = ~torch.isnan(torch.from_numpy(consensus_targets(sets, "dawid_skene", 0.999, False)))
    assert refined_right[confident].mean() >= ds_right[confident].mean() - 0.01
    assert refined_right.mean() >= max(mv_right.mean(), ds_right.mean())


def test_anchored_refined_labels_are_at_least_as_accurate_as_its_anchor_where_it_decides() -> None:
    """A vote that drifts from its anchor (or ignores it) fails this: on the anchored entries the
    refined labels are as accurate as the anchor's, within 1 point."""
    out, anchor, _, truth = _trained_on_pictures_of_the_truth()
    has = ~torch.isnan(anchor)
    anchor_acc = (anchor[has] == truth[has]).float().mean()
    assert ((out.target == truth).float()[has]).mean() >= anchor_acc - 0.01


@pytest.mark.xfail(strict=True, reason="measured: the anchored vote's refined labels on the entries its anchor leaves "
                   "open are right 0.57 of the time here, majority vote with ties → 1 0.75, although the pictures "
                   "show the truth (docs/vote.md); the default (the posterior vote) passes its version of this check "
                   "above")
def test_anchored_refined_labels_beat_majority_vote_where_the_anchor_is_silent() -> None:
    """On the contested entries (anchor NaN) the probe reads a picture that shows the truth, so a vote
    that uses it must beat majority vote with ties → 1 there."""
    out, anchor, sets, truth = _trained_on_pictures_of_the_truth()
    contested = torch.isnan(anchor)
    assert contested.sum() >= 10  # the seeded case leaves the anchor something to miss
    mv_ties1 = (torch.from_numpy(sets).mean(dim=1) >= 0.5).float()
    assert (out.target == truth).float()[contested].mean() > (mv_ties1[contested] == truth[contested]).float().mean()
