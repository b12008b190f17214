"""Baselines on tiny data where the answer is known: majority vote, mean, Dawid–Skene, confusion matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from l2v_monai.labels import majority_vote, split_labels
from l2v_monai.strategies import vote as v
from l2v_monai.strategies import (
    AnchoredVote,
    ConfusionMatrices,
    Consensus,
    DawidSkene,
    MajorityVote,
    MeanLabel,
    PaperVote,
    SingleLabelSet,
    attach_targets,
    build_strategy,
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


def test_dawid_skene_strategy_and_quality_report_share_one_fit() -> None:
    """The strategy's posterior and targets come from the fit the quality report shows; soft labels
    count as 1 from 0.5 up (0.7 is a positive, not truncated to 0)."""
    from l2v_monai.quality.label_set_estimates import estimate_quality

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, size=(150, 2))
    sets = [np.where(rng.random(truth.shape) < p, 1 - truth, truth) for p in (0.05, 0.2, 0.3)]
    labels = np.stack(sets, axis=1).astype(np.float32)
    labels[rng.random(labels.shape) < 0.1] = np.nan
    soft = np.where(labels == 1, 0.7, labels).astype(np.float32)  # the same labels, positives soft
    ds = DawidSkene()
    posterior = ds.posterior(soft)
    assert posterior.dtype == np.float32
    np.testing.assert_array_equal(posterior, estimate_quality(labels).posterior.astype(np.float32))
    decided = ds.aggregate(soft, min_confidence=0.9)
    confident = np.maximum(posterior, 1 - posterior) >= 0.9
    np.testing.assert_array_equal(np.isnan(decided), ~confident)
    np.testing.assert_array_equal(decided[confident], (posterior[confident] > 0.5).astype(np.float32))
    assert (decided[confident] == truth[confident]).mean() > 0.95


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
    s = build_strategy("l2v", num_sets=4, num_outputs=14, feature_dim=8, options={"l2v": {"variant": "paper", "alpha": 0.1, "k": 20}})
    assert type(s) is PaperVote and s.alpha == 0.1 and s.k == 20
    s = build_strategy("single", num_sets=4, num_outputs=14, feature_dim=8, label_sets=["a", "b", "c", "d"], options={"single": {"label_set": "c"}})
    assert s.index == 2
    with pytest.raises(ValueError, match="unknown label_strategy"):
        build_strategy("nope", num_sets=2, num_outputs=2, feature_dim=2)


def test_l2v_variant_picks_the_class_and_the_other_variants_options_are_left_out(caplog) -> None:
    build = lambda options: build_strategy("l2v", num_sets=4, num_outputs=3, feature_dim=8, options={"l2v": options})  # noqa: E731
    assert type(build({})) is AnchoredVote  # the bundle's default vote
    # A block written for the anchored vote, switched to the paper's by one key (the README's override).
    with caplog.at_level("INFO", logger="l2v_monai.strategies.learning_to_vote"):
        paper = build({"variant": "paper", "vote_objective": "probe", "min_confidence": 0.999, "feedback": "features", "seed": 1})
    assert type(paper) is PaperVote and paper.feedback == "features"
    assert "['min_confidence', 'seed', 'vote_objective']" in caplog.text
    with pytest.raises(ValueError, match=r"unknown l2v option\(s\) \['kk'\]"):
        build({"variant": "paper", "kk": 20})
    with pytest.raises(ValueError, match="unknown l2v variant 'exact'"):
        build({"variant": "exact"})


@pytest.mark.parametrize("config", ["train.json", "cifar10.json"])
def test_each_vote_class_defaults_to_the_config_that_uses_it(config: str) -> None:
    from pathlib import Path

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(Path(__file__).resolve().parents[1] / "bundle" / "configs" / config)
    block = parser.get_parsed_content("strategy_options#l2v")
    assert block["variant"] == AnchoredVote.variant
    default = AnchoredVote(num_sets=4, feature_dim=8, num_outputs=3)
    for key, value in block.items():
        if key not in ("variant", "seed"):
            assert getattr(default, key) == value, key
    # The paper's variant: α = 0.2, k = 50, T = 0.5, features under the virtual step, the network's rate.
    paper = PaperVote(num_sets=4, feature_dim=8)
    assert (paper.alpha, paper.k, paper.threshold, paper.feedback, paper.vote_lr) == (0.2, 50.0, 0.5, "features", None)


def test_strategies_import_and_run_without_crowd_kit() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['crowdkit'] = None\n"  # any import of crowd-kit now fails
        "import torch\n"
        "from l2v_monai.strategies import attach_targets, build_strategy\n"
        "from l2v_monai.engine.trainer import LearningToVoteTrainer\n"
        "s = build_strategy('l2v', num_sets=2, num_outputs=1, feature_dim=4, options={'l2v': {'consensus': 'majority'}})\n"
        "items = attach_targets([{'labels': [[1.0], [1.0]]}, {'labels': [[0.0], [1.0]]}], s)\n"
        "assert items[0]['target'][0] == 1.0 and 'crowdkit' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
        "try:\n"
        "    build_strategy('dawid_skene', num_sets=2, num_outputs=1, feature_dim=4).aggregate([[[1.0], [0.0]]])\n"
        "except ImportError:\n"
        "    print('dawid_skene needs crowd-kit')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "dawid_skene needs crowd-kit"


@pytest.mark.parametrize("ties", ["positive", "one"])
def test_majority_vote_ties_to_one(ties: str) -> None:
    labels = torch.tensor([[[1.0, 0.0, 1.0, NAN], [0.0, 0.0, 1.0, NAN], [1.0, 1.0, NAN, NAN], [0.0, 0.0, NAN, NAN]]])
    # Finding 0: 2-2 tie; 1: 3 of 4 say 0; 2: 2-0; 3: nobody votes.
    out = majority_vote(labels, multiclass=False, ties=ties)
    assert out[0, :3].tolist() == [1.0, 0.0, 1.0] and torch.isnan(out[0, 3])
    strategy = build_strategy("majority", num_sets=4, num_outputs=4, feature_dim=2, options={"majority": {"ties": ties, "seed": 3}})
    assert strategy.ties == ties
    target = strategy({"labels": labels.repeat(50, 1, 1)}, torch.zeros(50, 4), None, None).target
    assert (target[:, 0] == 1).all()  # the same on every call, unlike the random coin


def test_majority_vote_tie_rule_errors() -> None:
    with pytest.raises(ValueError, match="ties must be one of"):
        majority_vote(torch.zeros(1, 2, 1), multiclass=False, ties="zero")
    with pytest.raises(ValueError, match="multi-label"):
        MajorityVote(multiclass=True, ties="positive")
    with pytest.raises(ValueError, match="ties must be one of"):
        build_strategy("majority", num_sets=2, num_outputs=1, feature_dim=2, options={"majority": {"ties": "up"}})


def test_majority_random_ties_are_seeded_and_fresh_per_call() -> None:
    labels = torch.tensor([[[1.0], [0.0]]]).repeat(100, 1, 1)
    a, b = MajorityVote(seed=7), MajorityVote(seed=7)
    first = a({"labels": labels}, torch.zeros(100, 1), None, None).target
    assert torch.equal(first, b({"labels": labels}, torch.zeros(100, 1), None, None).target)
    assert not torch.equal(first, a({"labels": labels}, torch.zeros(100, 1), None, None).target)


# --- target is what the loss trained toward, for every strategy -------------------------------------


def _tiny_multilabel(seed: int = 0, b: int = 16, m: int = 4, n: int = 3):
    from tiny_nets import TinyNet

    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(b, m, n, generator=g) < 0.4).float()
    labels[0, 1, 0] = NAN
    labels[2, :, 1] = NAN  # no set labels this entry: target NaN, left out of the loss
    image = torch.rand(b, 1, 5, 5, generator=g)
    torch.manual_seed(seed)
    net = TinyNet(num_outputs=n)
    return image, labels, net


def _run(strategy, image, labels, net):
    """One forward of the strategy as the trainer runs it, with fitted targets attached."""
    fitted = strategy.aggregate(labels.numpy())
    batch = {"image": image, "labels": labels}
    if fitted is not None:
        batch["target"] = torch.from_numpy(fitted)
    features = net.features(image)
    logits = net.head(features)
    return strategy(batch, logits, features, net), logits


FIXED_TARGET_CASES = [
    ("single", {"label_set": 2}),
    ("majority", {"ties": "random", "seed": 1}),
    ("majority", {"ties": "positive"}),
    ("majority", {"ties": "nan"}),
    ("mean", {}),
    ("dawid_skene", {}),
    ("consensus", {}),
    ("l2v", {"variant": "paper"}),
]


@pytest.mark.parametrize("name,options", FIXED_TARGET_CASES)
def test_loss_is_the_loss_function_on_the_target(name: str, options: dict) -> None:
    image, labels, net = _tiny_multilabel()
    strategy = build_strategy(name, num_sets=4, num_outputs=3, feature_dim=net.num_features, options={name: options})
    out, logits = _run(strategy, image, labels, net)
    assert torch.isnan(out.target[2, 1])
    assert torch.allclose(out.loss, v.masked_bce(logits, out.target), atol=1e-6)
    if name == "majority" and options.get("ties") == "nan":
        assert torch.isnan(out.target).sum() > 1  # the ties are out of the loss, not guessed


@pytest.mark.parametrize("multiclass", [False, True])
@pytest.mark.parametrize("objective", ["meta", "probe"])
@pytest.mark.parametrize("refined", ["hard", "soft"])
def test_anchored_target_is_what_the_model_loss_trains_toward(refined: str, objective: str, multiclass: bool) -> None:
    image, labels, net = _tiny_multilabel(seed=1)
    if multiclass:
        labels = torch.nn.functional.one_hot(torch.nan_to_num(labels).argmax(dim=2), 3).float()
        labels[0, 1] = NAN  # a missing set
    strategy = build_strategy("l2v", num_sets=4, num_outputs=3, feature_dim=net.num_features, multiclass=multiclass,
                              options={"l2v": {"variant": "anchored", "refined": refined, "vote_objective": objective,
                                               "consensus": "majority", "min_confidence": 0.7, "seed": 5}})
    out, logits = _run(strategy, image, labels, net)
    values, mask = split_labels(out.target)
    model_loss = v.soft_loss(logits, values, mask, multiclass)
    assert torch.allclose(out.extras["model_loss"], model_loss, atol=1e-6)
    assert torch.allclose(out.loss, out.extras["model_loss"] + out.extras["vote_loss"], atol=1e-6)
    if objective == "probe":
        assert torch.allclose(out.extras["vote_loss"], out.extras["probe_loss"] + out.extras["agreement_loss"], atol=1e-6)
    else:
        assert torch.allclose(out.extras["vote_loss"], out.extras["meta_loss"])
    assert all(x.dim() == 0 and not x.requires_grad for x in out.extras.values())
    known = out.target[~torch.isnan(out.target)]
    if refined == "hard":
        assert set(known.unique().tolist()) <= {0.0, 1.0}
    else:
        assert ((known > 0) & (known < 1)).any()  # the mixture itself, not its decision


@pytest.mark.parametrize("multiclass", [False, True])
def test_confusion_matrix_target_is_where_its_gradient_points(multiclass: bool) -> None:
    image, labels, net = _tiny_multilabel(seed=2)
    if multiclass:
        labels = torch.nn.functional.one_hot(torch.nan_to_num(labels).argmax(dim=2), 3).float()
        labels[0, 1] = NAN
    cm = ConfusionMatrices(num_sets=4, num_outputs=3, multiclass=multiclass)
    with torch.no_grad():  # matrices away from the identity, so the target is not just a label average
        cm.rho.add_(torch.randn(cm.rho.shape, generator=torch.Generator().manual_seed(0)))
    features = net.features(image)
    logits = net.head(features).detach().requires_grad_(True)
    out = cm({"labels": labels}, logits, features, net)
    (grad,) = torch.autograd.grad(out.loss, logits)
    # Each annotator's CE is averaged over its observed labels: entry weight c = Σ_m observed / count_m.
    observed = (~torch.isnan(labels)).float()
    if multiclass:
        observed = observed[..., 0]
        c = (observed / observed.sum(dim=0)).sum(dim=1, keepdim=True)
        p = torch.softmax(logits, dim=1)
    else:
        c = (observed / observed.sum(dim=(0, 2)).view(1, -1, 1)).sum(dim=1)
        p = torch.sigmoid(logits)
    expected = torch.nan_to_num(c * (p - out.target))
    assert torch.allclose(grad, expected, atol=1e-6)
    assert torch.allclose(out.loss, out.extras["annotator_loss"] + out.extras["trace_loss"])
    if not multiclass:
        assert torch.isnan(out.target[2, 1]) and not torch.isnan(out.target[3]).any()
    # Not the model's own prediction copied back.
    assert not torch.allclose(torch.nan_to_num(out.target), torch.nan_to_num(p.detach()), atol=1e-3)


@pytest.mark.parametrize("config", ["train.json", "cifar10.json"])
def test_bundle_passes_its_seed_to_every_seeded_strategy(config: str) -> None:
    from pathlib import Path

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(Path(__file__).resolve().parents[1] / "bundle" / "configs" / config)
    parser["seed"] = 7
    options = parser.get_parsed_content("strategy_options")
    for name in ("majority", "l2v"):
        strategy = build_strategy(name, num_sets=5, num_outputs=3, feature_dim=4, label_sets=list("abcde"), options=options)
        assert strategy.generator.initial_seed() == 7, name
    assert options["majority"]["ties"] in ("random", "positive", "one", "nan")
