"""Options of the anchored vote measured for real report label sets: no virtual step, soft anchors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from l2v_monai.strategies import vote as v
from l2v_monai.strategies import AnchoredVote, PaperVote, attach_targets, consensus_targets
from tiny_nets import CountingNet, TinyNet, report_like_sets


def test_no_feedback_skips_the_virtual_step_and_zeroes_delta_f() -> None:
    torch.manual_seed(0)
    net = CountingNet(num_outputs=2)
    image = torch.rand(8, 1, 6, 6)
    labels = torch.from_numpy(report_like_sets(8)[0])
    features = net.features(image)
    logits = net.head(features)
    net.passes = 0
    feedback = v.virtual_step_feedback("none", net, image, None, logits, features, labels, 0.2)
    assert feedback.shape == (8, 4, net.num_features) and net.passes == 0
    # ΔF_m is exactly zero: the vote's descriptor carries no virtual-step information.
    d = v.set_descriptors(features, feedback, labels, logits, False)
    assert torch.equal(d[..., net.num_features : 2 * net.num_features], torch.zeros(8, 4, net.num_features))
    # The exact mode runs one feature pass per label set.
    v.virtual_step_feedback("features", net, image, None, logits, features, labels, 0.2)
    assert net.passes == 4


def test_no_feedback_strategy_target_is_what_its_loss_trained_toward() -> None:
    torch.manual_seed(0)
    sets, _ = report_like_sets(64)
    sets[0, 1, 0] = np.nan  # a missing label stays out of the vote
    net = CountingNet(num_outputs=2)
    strategy = AnchoredVote(num_sets=4, feature_dim=net.num_features, num_outputs=2, vote_objective="probe",
                            consensus="majority", min_confidence=1.0, refined="soft", feedback="none")
    items = attach_targets([{"labels": s} for s in sets], strategy)
    image = torch.rand(64, 1, 6, 6)
    features = net.features(image)
    logits = net.head(features)
    net.passes = 0
    batch = {"image": image, "labels": torch.from_numpy(sets), "target": torch.from_numpy(np.stack([it["target"] for it in items]))}
    out = strategy(batch, logits, features, net)
    assert net.passes == 0
    # Soft refined labels: the target is ȳ, a mixture of the set labels, and the model loss is BCE against it.
    assert torch.allclose(out.extras["model_loss"], v.masked_bce(logits, out.target), atol=1e-6)
    ybar, _ = v.vote(out.weights, batch["labels"])
    assert torch.allclose(out.target, ybar, atol=1e-6)
    # Unanimous entries cannot move: every set says the same thing there.
    values = torch.from_numpy(sets)
    unanimous = (values == values[:, :1]).all(dim=1)
    assert torch.equal(out.target[unanimous], values[:, 0][unanimous])
    with pytest.raises(ValueError, match="feedback='none'"):
        PaperVote(num_sets=4, feature_dim=4, feedback="none")


def test_dawid_skene_posterior_is_a_probability_that_agrees_with_its_decision() -> None:
    sets, truth = report_like_sets(600, seed=1)
    sets[3, 2, 1] = np.nan
    post = consensus_targets(sets, "dawid_skene_posterior", 1.0, False)
    hard = consensus_targets(sets, "dawid_skene", 0.0, False)
    assert post.shape == truth.shape and not np.isnan(post).any()
    assert ((post >= 0) & (post <= 1)).all()
    # Its most likely label is Dawid–Skene's decision.
    assert np.array_equal((post >= 0.5).astype(np.float32), hard)
    # Unanimous entries keep their label (as a near-certain probability); contested ones are in between.
    unanimous = (sets == sets[:, :1]).all(axis=1)
    assert np.abs(post[unanimous] - sets[:, 0][unanimous]).max() < 0.01
    assert ((post[~unanimous] > 0.01) & (post[~unanimous] < 0.99)).any()
    with pytest.raises(ValueError, match="multi-label"):
        consensus_targets(np.eye(3, dtype=np.float32)[None].repeat(2, 0), "dawid_skene_posterior", 1.0, True)


def test_majority_anchor_at_one_half_is_mv_with_ties_to_one() -> None:
    sets = np.array([[[1], [1], [0], [0]], [[1], [0], [0], [0]], [[0], [0], [0], [0]], [[1], [1], [1], [0]]], dtype=np.float32)
    anchor = consensus_targets(sets, "majority", 0.5, False)
    assert anchor[:, 0].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_no_finding_is_capped_by_the_other_findings() -> None:
    # Outputs: [finding A, No Finding, Support Devices].
    refined = torch.tensor([[0.0, 1.0, 1.0], [0.7, 1.0, 0.0], [0.3, 0.5, 1.0], [1.0, 0.0, 0.0]])
    capped = v.no_finding_consistent(refined, no_finding=1, ignore=(2,))
    # A device does not make a report abnormal; a kept finding does, by as much as the vote keeps it.
    assert capped[:, 1].tolist() == pytest.approx([1.0, 0.3, 0.5, 0.0])
    assert torch.equal(capped[:, [0, 2]], refined[:, [0, 2]])


def test_no_finding_cap_is_in_the_target_the_model_trained_toward() -> None:
    torch.manual_seed(0)
    sets, _ = report_like_sets(64)
    # Output 1 plays "No Finding": the sets call it normal where they saw nothing in output 0.
    sets[:, :, 1] = 1 - sets[:, :, 0]
    sets[:8, 2:, 1] = 1.0  # labeler b misses finding 0 on eight reports and calls them normal
    sets[:8, 2:, 0] = 0.0
    sets[:8, :2, 0] = 1.0
    sets[:8, :2, 1] = 0.0
    net = TinyNet(num_outputs=2)
    kwargs = dict(num_sets=4, feature_dim=net.num_features, num_outputs=2, vote_objective="probe",
                  consensus="majority", min_confidence=1.0, refined="soft", feedback="none")
    capped = AnchoredVote(**kwargs, no_finding=1)
    items = attach_targets([{"labels": s} for s in sets], capped)
    image = torch.rand(64, 1, 6, 6)
    features = net.features(image)
    logits = net.head(features)
    batch = {"image": image, "labels": torch.from_numpy(sets), "target": torch.from_numpy(np.stack([it["target"] for it in items]))}
    out = capped(batch, logits, features, net)
    assert torch.all(out.target[:, 1] <= 1 - out.target[:, 0] + 1e-6)
    assert torch.allclose(out.extras["model_loss"], v.masked_bce(logits, out.target), atol=1e-6)
    # On the contested reports the uncapped vote leaves "No Finding" above what finding 0 allows.
    plain = AnchoredVote(**kwargs)
    plain.load_state_dict(capped.state_dict())
    uncapped = plain(batch, logits, features, net).target
    assert (uncapped[:8, 1] > 1 - uncapped[:8, 0] + 1e-3).any()
    for bad in (dict(multiclass=True, no_finding=1), dict(no_finding=2)):  # one-hot data; no output 2
        with pytest.raises(ValueError, match="no_finding"):
            AnchoredVote(num_sets=4, feature_dim=4, num_outputs=2, **bad)
