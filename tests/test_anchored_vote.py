"""The anchored learning-to-vote variant: per-sample weights, no degenerate targets, anchor-only vote gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from l2v_monai.strategies import vote as v
from l2v_monai.strategies import AnchoredVote, PaperVote, attach_targets, consensus_targets
from tiny_nets import TinyNet, train_steps


def _two_kinds(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images of two kinds (dark / bright). Set 0 is right on dark images, set 1 on bright ones,
    set 2 is right a third of the time. Returns images, truth, label sets (one-hot), kind."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.arange(n) % 2
    truth = torch.randint(0, 3, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    # The class is a texture (horizontal stripes, vertical stripes, checkerboard); the kind is brightness.
    textures = torch.stack([(yy % 2), (xx % 2), ((yy + xx) % 2)]).float()
    image = 0.3 * textures[truth].unsqueeze(1) + 0.6 * kind.view(-1, 1, 1, 1) + 0.05 * torch.rand(n, 1, 8, 8, generator=g)
    wrong = (truth + 1 + torch.randint(0, 2, (n,), generator=g)) % 3
    set0 = torch.where(kind == 0, truth, wrong)
    set1 = torch.where(kind == 1, truth, wrong)
    set2 = torch.randint(0, 3, (n,), generator=g)
    sets = torch.nn.functional.one_hot(torch.stack([set0, set1, set2], 1), 3).float()
    return image, truth, sets, kind


def test_anchored_weights_respond_per_sample() -> None:
    torch.manual_seed(0)
    image, truth, sets, kind = _two_kinds()
    anchor = torch.nn.functional.one_hot(truth, 3).float()  # a confident consensus, fitted before training
    net = TinyNet(num_outputs=3, width=8)
    strategy = AnchoredVote(num_sets=3, feature_dim=net.num_features, num_outputs=3, multiclass=True,
                            vote_objective="meta", min_confidence=0.9, feedback="features", vote_lr=0.05)
    w = train_steps(strategy, net, image, sets, anchor).weights
    # Set 0 is trusted on dark images, set 1 on bright ones: the vote differs per sample, not per set.
    assert w[kind == 0, 0].mean() > w[kind == 1, 0].mean() + 0.1
    assert w[kind == 1, 1].mean() > w[kind == 0, 1].mean() + 0.1


@pytest.mark.parametrize("objective", ["meta", "probe"])
def test_anchored_targets_are_never_all_zero_where_paper_binarization_is(objective: str) -> None:
    torch.manual_seed(0)
    image, truth, _, _ = _two_kinds(n=64)
    # Three sets that disagree on every sample: the case built to provoke all-zero targets.
    sets = torch.nn.functional.one_hot(torch.stack([truth, (truth + 1) % 3, (truth + 2) % 3], 1), 3).float()
    net = TinyNet(num_outputs=3)
    features = net.features(image)
    logits = net.head(features)
    batch = {"image": image, "labels": sets, "target": torch.nn.functional.one_hot(truth, 3).float()}
    paper = PaperVote(num_sets=3, feature_dim=net.num_features, multiclass=True)
    # With near-uniform weights no class reaches T = 0.5: the paper's binarized targets are all zero.
    zero_rows = (paper(batch, logits, features, net).target.max(dim=1).values < 0.5).float().mean()
    assert zero_rows == 1.0
    anchored = AnchoredVote(num_sets=3, feature_dim=net.num_features, num_outputs=3, multiclass=True,
                            vote_objective=objective, feedback="features")
    out = anchored(batch, logits, features, net)
    assert torch.allclose(out.target.sum(dim=1), torch.ones(64))  # a distribution over classes on every row
    assert torch.allclose(v.harden(out.target, True).sum(dim=1), torch.ones(64))


def test_anchored_multilabel_vote_is_per_finding_and_keeps_positives() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    truth = (torch.rand(64, 4, generator=g) < 0.4).float()
    sets = torch.stack([torch.zeros_like(truth), truth, truth], dim=1)  # set 0: "fewest positives"
    net = TinyNet(num_outputs=4)
    image = torch.rand(64, 1, 6, 6, generator=g)
    strategy = AnchoredVote(num_sets=3, feature_dim=net.num_features, num_outputs=4, vote_objective="meta", feedback="features")
    features = net.features(image)
    out = strategy({"image": image, "labels": sets, "target": truth}, net.head(features), features, net)
    assert out.weights.shape == (64, 3, 4)
    assert torch.allclose(out.weights.sum(dim=1), torch.ones(64, 4))
    # Two of three sets say 1 wherever the truth is 1, so the refined label keeps every positive.
    assert (v.harden(out.target, False) == truth).all()


def test_only_the_anchor_trains_the_vote() -> None:
    torch.manual_seed(0)
    image, truth, sets, _ = _two_kinds(n=32)
    net = TinyNet(num_outputs=3)
    strategy = AnchoredVote(num_sets=3, feature_dim=net.num_features, num_outputs=3, multiclass=True,
                            vote_objective="meta", feedback="features")
    features = net.features(image)
    logits = net.head(features)
    no_anchor = torch.full((32, 3), float("nan"))
    out = strategy({"image": image, "labels": sets, "target": no_anchor}, logits, features, net)
    out.loss.backward()
    # Without confident consensus labels the model still learns, the vote gets no gradient at all.
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in strategy.head.parameters())
    assert net.head.weight.grad.abs().sum() > 0


def test_consensus_targets_confident_majority_and_dawid_skene() -> None:
    labels = np.array([[[1.0], [1.0], [1.0]], [[1.0], [0.0], [1.0]], [[0.0], [np.nan], [0.0]]], dtype=np.float32)
    unanimous = consensus_targets(labels, "majority", 1.0, multiclass=False)[:, 0]
    assert unanimous[0] == 1 and np.isnan(unanimous[1]) and unanimous[2] == 0
    two_thirds = consensus_targets(labels, "majority", 0.6, multiclass=False)[:, 0]
    assert two_thirds.tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="unknown consensus"):
        consensus_targets(labels, "vote", 0.5, multiclass=False)
    items = [{"labels": labels[i]} for i in range(3)]
    anchored = AnchoredVote(num_sets=3, feature_dim=4, num_outputs=1, consensus="majority", min_confidence=1.0)
    assert np.isnan(attach_targets(items, anchored)[1]["target"][0])
    assert "target" not in attach_targets(items, PaperVote(num_sets=3, feature_dim=4))[0]


def _contested_finding(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One finding whose truth is the image's brightness > 0.5, read by two label sets "u0" and "u1".

    Clear images (far from 0.5) get the same label from both; on faint ones the sets split, u0
    says 0 and u1 says 1, so every per-set rule is right on exactly half of them.
    Returns images, truth, label sets (``n × 2 × 1``) and the contested mask.
    """
    g = torch.Generator().manual_seed(seed)
    brightness = torch.rand(n, generator=g)
    truth = (brightness > 0.5).float()
    contested = (brightness - 0.5).abs() < 0.2
    image = brightness.view(-1, 1, 1, 1) + 0.05 * torch.randn(n, 1, 6, 6, generator=g)
    u0 = torch.where(contested, torch.zeros_like(truth), truth)
    u1 = torch.where(contested, torch.ones_like(truth), truth)
    return image, truth, torch.stack([u0, u1], dim=1).unsqueeze(-1), contested


def test_probe_vote_picks_the_right_set_on_contested_samples() -> None:
    torch.manual_seed(0)
    image, truth, sets, contested = _contested_finding()
    items = [{"labels": sets[i].numpy()} for i in range(len(image))]
    net = TinyNet(num_outputs=1, width=8)
    strategy = AnchoredVote(num_sets=2, feature_dim=net.num_features, num_outputs=1, vote_objective="probe",
                            consensus="majority", min_confidence=1.0, feedback="features", vote_lr=0.05)
    anchor = torch.from_numpy(np.stack([it["target"] for it in attach_targets(items, strategy)]))
    assert torch.isnan(anchor[contested]).all() and not torch.isnan(anchor[~contested]).any()
    out = train_steps(strategy, net, image, sets, anchor)
    refined = v.harden(out.target, False)[:, 0]
    # Majority vote, Dawid–Skene or any per-set weight is right on half the contested samples.
    accuracy = (refined[contested] == truth[contested]).float().mean()
    assert accuracy > 0.8, accuracy
    # It got there by voting per sample: u1 on the bright half, u0 on the dark half.
    w_u1 = out.weights[:, 1, 0]
    assert w_u1[contested & (truth == 1)].mean() > w_u1[contested & (truth == 0)].mean() + 0.3


def test_probe_learns_from_anchors_only_and_never_moves_the_model() -> None:
    torch.manual_seed(0)
    image, _, sets, _ = _contested_finding(n=32)
    net = TinyNet(num_outputs=1)
    strategy = AnchoredVote(num_sets=2, feature_dim=net.num_features, num_outputs=1, vote_objective="probe", feedback="features")
    features = net.features(image)
    out = strategy({"image": image, "labels": sets, "target": torch.full((32, 1), float("nan"))}, net.head(features), features, net)
    out.loss.backward()
    # No anchor: the probe gets no gradient (it never learns from the labels the model trains on).
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in strategy.probe.parameters())
    # The vote's objective is differentiable in ȳ only: probe logits and features are detached.
    ybar = torch.full((4, 1), 0.5, requires_grad=True)
    probe_logits = torch.zeros(4, 1, requires_grad=True)
    loss = v.anchor_agreement_loss(ybar, torch.ones(4, 1), torch.tensor([[1.0], [0.0], [float("nan")], [float("nan")]]), probe_logits, False)
    loss.backward()
    assert probe_logits.grad is None and ybar.grad.abs().sum() > 0
    # Target 1, target 0, and the probe's 0.5 twice: the gradient pulls ȳ toward each target.
    assert ybar.grad[0, 0] < 0 < ybar.grad[1, 0] and torch.allclose(ybar.grad[2:], torch.zeros(2, 1), atol=1e-6)
    with pytest.raises(ValueError, match="vote_objective"):
        AnchoredVote(num_sets=2, feature_dim=4, num_outputs=1, vote_objective="model")
