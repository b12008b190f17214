"""The learning-to-vote math: vote head, virtual step, refined labels, binarization, masking."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from l2v_monai.strategies import vote as v
from l2v_monai.strategies import PaperVote
from tiny_nets import TinyNet


def _batch(b: int = 8, m: int = 3, n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 1, 6, 6, generator=g)
    labels = (torch.rand(b, m, n, generator=g) > 0.5).float()
    return image, labels


def test_vote_head_weights_sum_to_one_per_sample() -> None:
    torch.manual_seed(0)
    head = v.VoteHead(num_sets=4, feature_dim=5)
    w = head(torch.randn(7, 4, 5))
    assert w.shape == (7, 4)
    assert torch.allclose(w.sum(dim=1), torch.ones(7), atol=1e-6)
    assert (w > 0).all()


def test_vote_head_rejects_a_single_label_set() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        v.VoteHead(num_sets=1, feature_dim=3)


def test_binarization_matches_the_formula() -> None:
    ybar = torch.tensor([0.0, 0.3, 0.5, 0.52, 1.0])
    out = v.binarize(ybar, k=50, threshold=0.5)
    expected = [1 / (1 + math.exp(-50 * (y - 0.5))) for y in ybar.tolist()]
    assert torch.allclose(out, torch.tensor(expected), atol=1e-7)
    assert out[2].item() == pytest.approx(0.5)
    assert out[0].item() < 1e-10 and out[-1].item() > 1 - 1e-10


def test_vote_is_the_weighted_sum_of_label_sets() -> None:
    labels = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]])  # 1 × M=3 × N=2
    w = torch.tensor([[0.5, 0.3, 0.2]])
    ybar, valid = v.vote(w, labels)
    assert torch.allclose(ybar, torch.tensor([[0.7, 0.2]]))
    assert valid.tolist() == [[1.0, 1.0]]


def test_vote_renormalises_over_available_sets_and_marks_unlabelled_findings() -> None:
    nan = float("nan")
    labels = torch.tensor([[[1.0, nan, nan], [0.0, 1.0, nan], [1.0, 0.0, nan]]])
    w = torch.tensor([[0.5, 0.3, 0.2]])
    ybar, valid = v.vote(w, labels)
    # Finding 0: all sets; finding 1: sets 1 and 2 renormalised (0.3/(0.5) * 1); finding 2: none.
    assert ybar[0, 0].item() == pytest.approx(0.7)
    assert ybar[0, 1].item() == pytest.approx(0.3 / 0.5)
    assert valid.tolist() == [[1.0, 1.0, 0.0]]
    assert not torch.isnan(ybar).any()


def test_masked_bce_ignores_missing_labels() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    full = v.masked_bce(logits[:, :2], torch.tensor([[1.0, 0.0]]))
    with_nan = v.masked_bce(logits, torch.tensor([[1.0, 0.0, float("nan")]]))
    assert with_nan.item() == pytest.approx(full.item())
    all_missing = v.masked_bce(logits.requires_grad_(), torch.full((1, 3), float("nan")))
    assert all_missing.item() == 0.0
    all_missing.backward()  # still part of the graph


def test_feature_feedback_equals_an_explicit_sgd_step_per_label_set() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    image, labels = _batch()
    features = net.features(image)
    logits = net.head(features)
    fb = v.feature_feedback(net, image, None, logits, features, labels, alpha=0.2)
    assert fb.shape == (8, 3, net.num_features)
    assert not fb.requires_grad
    for m in range(3):
        ref = copy.deepcopy(net)
        opt = torch.optim.SGD(ref.parameters(), lr=0.2)
        opt.zero_grad()
        v.masked_bce(ref(image), labels[:, m]).backward()
        opt.step()
        assert torch.allclose(fb[:, m], ref.features(image), atol=1e-5)
    # Different label sets give different feedback.
    assert not torch.allclose(fb[:, 0], fb[:, 1])


def test_meta_step_changes_no_parameters_optimizer_state_or_bn_statistics() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    strategy = PaperVote(num_sets=3, feature_dim=net.num_features)
    opt = torch.optim.Adam(strategy.param_groups(net, 1e-3)[0]["params"] + list(strategy.parameters()), lr=1e-3)
    image, labels = _batch()
    # One real step so Adam has state to protect.
    opt.zero_grad()
    v.masked_bce(net(image), labels[:, 0]).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    params = copy.deepcopy(net.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    features = net.features(image)
    logits = net.head(features)
    # net.features above updated BN once (the real forward); snapshot after it.
    params = copy.deepcopy(net.state_dict())
    v.feature_feedback(net, image, None, logits, features, labels, alpha=0.2)
    for key, value in net.state_dict().items():
        assert torch.equal(value, params[key]), key
    assert all(p.grad is None for p in net.parameters())
    after = opt.state_dict()
    for pid, state in opt_state["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(after["state"][pid][name]), torch.as_tensor(value)), name


def test_gradients_reach_the_vote_head_through_the_refined_labels() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    strategy = PaperVote(num_sets=3, feature_dim=net.num_features, k=5.0)
    image, labels = _batch()
    features = net.features(image)
    out = strategy({"image": image, "labels": labels}, net.head(features), features, net)
    out.loss.backward()
    assert strategy.head.attn.weight.grad is not None
    assert strategy.head.attn.weight.grad.abs().sum() > 0
    assert strategy.head.attn.bias.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())
    assert torch.allclose(out.weights.sum(dim=1), torch.ones(8), atol=1e-6)


def test_gradient_feedback_is_per_sample_feature_gradient() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    image, labels = _batch(b=4)
    features = net.features(image)
    fb = v.gradient_feedback(net, image, None, net.head(features), features, labels, alpha=0.2)
    assert fb.shape == (4, 3, net.num_features)
    f0 = features[:1].detach().requires_grad_(True)
    torch.nn.functional.binary_cross_entropy_with_logits(net.head(f0), labels[:1, 1], reduction="sum").backward()
    assert torch.allclose(fb[0, 1], f0.grad[0], atol=1e-6)


def test_l2v_handles_masked_label_sets() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    strategy = PaperVote(num_sets=3, feature_dim=net.num_features)
    image, labels = _batch()
    labels[0, 1] = float("nan")  # a set missing for one sample
    labels[:, :, 2] = float("nan")  # a finding nobody labelled
    features = net.features(image)
    out = strategy({"image": image, "labels": labels}, net.head(features), features, net)
    assert torch.isfinite(out.loss)
    assert torch.isnan(out.target[:, 2]).all()
    assert not torch.isnan(out.target[:, :2]).any()
    out.loss.backward()
    assert torch.isfinite(strategy.head.attn.weight.grad).all()
