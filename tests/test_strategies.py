"""Baselines on tiny data where the answer is known: majority vote, mean, Dawid–Skene, confusion matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from l2v_monai.strategies import (
    ConfusionMatrices,
    Consensus,
    DawidSkene,
    LearningToVote,
    MajorityVote,
    MeanLabel,
    SingleLabelSet,
    attach_targets,
    build_strategy,
    majority_vote,
)

NAN = float("nan")


def test_majority_vote_multilabel_counts_and_missing() -> None:
    labels = torch.tensor([[[1.0, 0.0, NAN], [1.0, 1.0, NAN], [0.0, 0.0, NAN]]])  # 1 × 3 × 3
    out = majority_vote(labels, multiclass=False)
    assert out[0, :2].tolist() == [1.0, 0.0]
    assert torch.isnan(out[0, 2])


def test_majority_vote_breaks_ties_at_random_or_leaves_them_nan() -> None:
    labels = torch.tensor([[[1.0], [0.0]]]).repeat(200, 1, 1)  # every sample a 1-1 tie
    out = majority_vote(labels, multiclass=False, generator=torch.Generator().manual_seed(0))
    assert 60 < out.sum().item() < 140  # both outcomes, roughly half each
    assert torch.isnan(majority_vote(labels, multiclass=False, ties="nan")).all()


def test_majority_vote_multiclass_one_hot() -> None:
    eye = torch.eye(4)
    labels = torch.stack([eye[[2, 2, 1]], eye[[0, 3, 3]]])  # B=2, M=3, K=4
    out = majority_vote(labels, multiclass=True)
    assert out.argmax(dim=1).tolist() == [2, 3]
    assert torch.equal(out.sum(dim=1), torch.ones(2))
    tie = torch.stack([eye[[0, 1]]] * 300)
    picks = majority_vote(tie, multiclass=True, generator=torch.Generator().manual_seed(1)).argmax(1)
    assert set(picks.tolist()) == {0, 1}
    assert torch.isnan(majority_vote(tie, multiclass=True, ties="nan")).all()


def test_single_and_mean_targets() -> None:
    labels = torch.tensor([[[1.0, 0.0], [0.0, NAN], [1.0, 1.0]]])
    logits = torch.zeros(1, 2)
    single = SingleLabelSet("b", label_sets=["a", "b", "c"])({"labels": labels}, logits, None, None)
    assert torch.equal(torch.isnan(single.target), torch.tensor([[False, True]]))
    mean = MeanLabel()({"labels": labels}, logits, None, None)
    assert torch.allclose(mean.target, torch.tensor([[2 / 3, 0.5]]))
    with pytest.raises(ValueError, match="not among"):
        SingleLabelSet("z", label_sets=["a", "b"])


def test_dawid_skene_recovers_truth_where_majority_vote_fails() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, size=200)
    good = truth.copy()
    fair = np.where(rng.random(200) < 0.3, 1 - truth, truth)  # 30% noise
    flipper = 1 - truth  # always wrong
    labels = np.stack([good, fair, flipper], axis=1)[:, :, None].astype(np.float32)  # S × M × 1
    ds = DawidSkene().aggregate(labels)[:, 0]
    mv = majority_vote(torch.from_numpy(labels), multiclass=False, ties="nan")[:, 0].numpy()
    assert (ds == truth).mean() == 1.0
    assert (mv == truth).mean() < 0.8


def test_dawid_skene_multiclass_and_attach_targets() -> None:
    rng = np.random.default_rng(1)
    k, s = 4, 300
    truth = rng.integers(0, k, size=s)
    eye = np.eye(k, dtype=np.float32)
    sets = [truth, np.where(rng.random(s) < 0.2, rng.integers(0, k, s), truth), (truth + 1) % k]
    labels = np.stack([eye[x] for x in sets], axis=1)  # S × M × K
    labels[0, 2] = np.nan  # one missing annotation
    items = [{"labels": labels[i]} for i in range(s)]
    out = attach_targets(items, DawidSkene(multiclass=True))
    target = np.stack([it["target"] for it in out])
    assert target.shape == (s, k)
    assert (target.argmax(1) == truth).mean() > 0.97
    assert attach_targets(items, MajorityVote()) is items


def test_confusion_matrices_start_near_identity_and_learn_a_flipping_annotator() -> None:
    cm = ConfusionMatrices(num_sets=2, num_outputs=3, multiclass=True, trace_weight=0.01, lr=0.1)
    a0 = cm.matrices().detach()
    assert torch.allclose(a0.sum(-1), torch.ones(2, 3))
    assert (a0.diagonal(dim1=-2, dim2=-1) > 0.98).all()
    # The model already predicts the truth; annotator 0 copies it, annotator 1 shifts every class by one.
    torch.manual_seed(0)
    truth = torch.randint(0, 3, (256,))
    logits = 8.0 * torch.nn.functional.one_hot(truth, 3).float()
    eye = torch.eye(3)
    labels = torch.stack([eye[truth], eye[(truth + 1) % 3]], dim=1)
    opt = torch.optim.Adam(cm.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        cm({"labels": labels}, logits, None, None).loss.backward()
        opt.step()
    a = cm.matrices().detach()
    assert a[0].diagonal().min() > 0.9
    for c in range(3):
        assert a[1, c, (c + 1) % 3] > 0.9


def test_confusion_matrices_multilabel_shape_and_own_learning_rate() -> None:
    cm = ConfusionMatrices(num_sets=4, num_outputs=14, multiclass=False, lr=0.05)
    assert cm.matrices().shape == (4, 14, 2, 2)
    groups = cm.param_groups(torch.nn.Linear(2, 2), lr=1e-4)
    assert [g["lr"] for g in groups] == [1e-4, 0.05]
    labels = torch.randint(0, 2, (5, 4, 14)).float()
    labels[0, 0, 0] = NAN
    out = cm({"labels": labels}, torch.randn(5, 14, requires_grad=True), None, None)
    assert torch.isfinite(out.loss)
    assert out.target.shape == (5, 14)


def test_consensus_trains_only_where_the_sets_agree() -> None:
    labels = np.array([[[1.0, 0.0], [1.0, 1.0], [1.0, NAN]], [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]], dtype=np.float32)
    strategy = Consensus()
    items = attach_targets([{"labels": x} for x in labels], strategy)
    target = np.stack([it["target"] for it in items])
    # Unanimous among the sets that have a value (a missing value is not a dissent); else masked.
    assert np.array_equal(np.isnan(target), [[False, True], [True, False]])
    assert target[0, 0] == 1 and target[1, 1] == 0
    logits = torch.zeros(2, 2, requires_grad=True)
    out = strategy({"target": torch.from_numpy(target)}, logits, None, None)
    out.loss.backward()
    assert torch.equal(logits.grad == 0, torch.tensor([[False, True], [True, False]]))
    two_of_three = attach_targets([{"labels": labels[1]}], Consensus(min_confidence=0.6))[0]["target"]
    assert two_of_three.tolist() == [0.0, 0.0]
    with pytest.raises(KeyError, match="attach_targets"):
        strategy({"labels": torch.from_numpy(labels)}, logits, None, None)


def test_build_strategy_selects_by_name_with_options() -> None:
    s = build_strategy("l2v", num_sets=4, num_outputs=14, feature_dim=8, options={"l2v": {"alpha": 0.1, "k": 20}})
    assert isinstance(s, LearningToVote) and s.alpha == 0.1 and s.k == 20
    s = build_strategy("single", num_sets=4, num_outputs=14, feature_dim=8, label_sets=["a", "b", "c", "d"], options={"single": {"label_set": "c"}})
    assert s.index == 2
    with pytest.raises(ValueError, match="unknown label_strategy"):
        build_strategy("nope", num_sets=2, num_outputs=2, feature_dim=2)
