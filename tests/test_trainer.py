"""The Ignite trainer: one epoch fires MONAI's events; postprocessing and metrics see its output;
a user's ``prepare_batch`` and ``inferer`` are the ones that run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Average
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.handlers import from_engine
from monai.inferers import SimpleInferer
from monai.transforms import Activationsd, Compose

from l2v_monai.strategies import PaperVote, attach_targets, build_strategy
from l2v_monai.engine.trainer import LabelSetBatch, LearningToVoteTrainer, StrategyBatch
from tiny_nets import TinyNet


def _items(n: int = 24, m: int = 3, k: int = 3, report_dim: int | None = None, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        labels = (rng.random((m, k)) > 0.5).astype(np.float32)
        labels[0, 0] = np.nan if rng.random() < 0.2 else labels[0, 0]
        item = {"image": rng.random((1, 6, 6)).astype(np.float32), "labels": labels}
        if report_dim:
            item["report_embedding"] = rng.standard_normal(report_dim).astype(np.float32)
        items.append(item)
    return items


@pytest.mark.parametrize("strategy_name,options", [
    ("l2v", {"variant": "paper"}), ("l2v", {}), ("majority", {}), ("mean", {}), ("single", {}), ("cm", {}),
    ("dawid_skene", {}), ("consensus", {}),
])
def test_one_epoch_fires_events_and_feeds_postprocessing_and_metrics(strategy_name: str, options: dict) -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    strategy = build_strategy(strategy_name, num_sets=3, num_outputs=3, feature_dim=net.num_features,
                              options={strategy_name: options})
    items = attach_targets(_items(), strategy)
    loader = DataLoader(Dataset(items), batch_size=8, shuffle=False)
    optimizer = torch.optim.Adam(strategy.param_groups(net, 1e-2))
    seen_pred: list[torch.Tensor] = []
    trainer = LearningToVoteTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=optimizer,
        strategy=strategy,
        postprocessing=Compose([Activationsd(keys="pred", sigmoid=True)]),
        key_train_metric={"train_loss": Average(output_transform=from_engine(["loss"], first=True))},
    )
    fired: dict[str, int] = {}
    for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
                  IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED):
        trainer.add_event_handler(event, lambda e, name=event.name: fired.__setitem__(name, fired.get(name, 0) + 1))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen_pred.extend(o["pred"] for o in e.state.output))
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    assert fired == {"FORWARD_COMPLETED": 3, "LOSS_COMPLETED": 3, "BACKWARD_COMPLETED": 3, "MODEL_COMPLETED": 3}
    assert len(seen_pred) == 24
    assert all(((p >= 0) & (p <= 1)).all() for p in seen_pred)  # the sigmoid postprocessing ran
    assert np.isfinite(trainer.state.metrics["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    if strategy_name == "l2v":  # one weight per set (the paper's), or per set and finding (the anchored vote's)
        assert trainer.state.output[0]["vote_weights"].shape == ((3,) if options else (3, 3))


def test_image_and_report_batches_reach_the_network() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3, report_dim=5)
    strategy = PaperVote(num_sets=3, feature_dim=net.num_features)
    loader = DataLoader(Dataset(_items(report_dim=5)), batch_size=8)
    trainer = LearningToVoteTrainer("cpu", 1, loader, net, torch.optim.Adam(strategy.param_groups(net, 1e-2)), strategy, decollate=False)
    trainer.run()
    assert net.report.weight.grad is not None and net.report.weight.grad.abs().sum() > 0
    assert strategy.head.attn.weight.grad.abs().sum() > 0


def test_vote_head_parameters_are_in_the_optimizer_and_move() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    strategy = build_strategy("l2v", num_sets=3, num_outputs=3, feature_dim=net.num_features, options={"l2v": {"variant": "paper", "k": 5.0}})
    optimizer = torch.optim.Adam(strategy.param_groups(net, 1e-2))
    assert any(p is strategy.head.attn.weight for g in optimizer.param_groups for p in g["params"])
    before = strategy.head.attn.weight.detach().clone()
    loader = DataLoader(Dataset(_items()), batch_size=8)
    LearningToVoteTrainer("cpu", 1, loader, net, optimizer, strategy).run()
    assert not torch.equal(before, strategy.head.attn.weight)


def test_evaluator_prepare_batch_uses_noisy_majority_or_clean_labels() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    items = _items(n=8)
    for it in items:
        it["label"] = np.array([1.0, 0.0, np.nan], dtype=np.float32)
    loader = DataLoader(Dataset(items), batch_size=4)
    labels_seen = []
    for target in ("majority", "clean"):
        ev = SupervisedEvaluator("cpu", loader, net, prepare_batch=LabelSetBatch(target), decollate=False)
        ev.add_event_handler(Events.ITERATION_COMPLETED, lambda e: labels_seen.append(e.state.output["label"]))
        ev.run()
    assert labels_seen[0].shape == (4, 3)
    assert torch.isnan(labels_seen[-1][:, 2]).all() and labels_seen[-1][:, 0].eq(1).all()
    with pytest.raises(ValueError, match="unknown evaluation target"):
        LabelSetBatch("best")


# --- MONAI's engine contract: prepare_batch, then inferer, then the loss ---------------------------


class FlippedLabelSets(StrategyBatch):
    """A user's ``prepare_batch``: the default one with every label inverted, counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, batchdata, device=None, non_blocking=False, **kwargs):
        self.calls += 1
        image, sets, args, network_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        return image, {**sets, "labels": 1 - sets["labels"]}, args, network_kwargs


class ScaledInferer(SimpleInferer):
    """A user's inferer: the network's logits times ``scale``, counting its calls and the inputs it was given."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale, self.calls, self.kwargs_seen = scale, 0, set()

    def __call__(self, inputs, network, *args, **kwargs):
        self.calls += 1
        self.kwargs_seen |= set(kwargs)
        return self.scale * super().__call__(inputs, network, *args, **kwargs)


@pytest.mark.parametrize("strategy_name,options", [("single", {"label_set": 1}), ("l2v", {"variant": "paper"}), ("l2v", {})])
def test_user_prepare_batch_and_inferer_are_the_ones_that_run(strategy_name: str, options: dict) -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3, report_dim=5)
    strategy = build_strategy(strategy_name, num_sets=3, num_outputs=3, feature_dim=net.num_features,
                              options={strategy_name: options})
    loader = DataLoader(Dataset(attach_targets(_items(n=8, report_dim=5), strategy)), batch_size=8)
    # What the first step must compute: the strategy's loss on the inverted labels and the scaled
    # logits, from the network and strategy as they are before the step.
    net0, strategy0 = copy.deepcopy(net), copy.deepcopy(strategy)
    image, sets, _, network_kwargs = FlippedLabelSets()(next(iter(loader)))
    features = net0.features(image, **network_kwargs)
    expected = strategy0({**network_kwargs, **sets, "image": image}, 3.0 * net0.head(features), features, net0).loss

    prepare, inferer = FlippedLabelSets(), ScaledInferer(3.0)
    trainer = LearningToVoteTrainer("cpu", 2, loader, net, torch.optim.Adam(strategy.param_groups(net, 1e-2)), strategy,
                                    prepare_batch=prepare, inferer=inferer, decollate=False)
    losses: list[torch.Tensor] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.run()
    assert prepare.calls == inferer.calls == 2  # one batch per epoch, two epochs
    assert inferer.kwargs_seen == {"report_embedding"}  # the network's extra input goes through the inferer
    assert torch.allclose(losses[0], expected.detach(), atol=1e-6), (losses[0], expected)
    # Not the loss of the default prepare_batch and inferer.
    default = strategy0({**network_kwargs, **StrategyBatch()(next(iter(loader)))[1], "image": image},
                        net0.head(features), features, net0).loss
    assert not torch.allclose(losses[0], default.detach(), atol=1e-3)


def test_an_inferer_that_runs_the_network_twice_or_a_network_without_head_is_refused() -> None:
    net = TinyNet(num_outputs=3)
    strategy = build_strategy("mean", num_sets=3, num_outputs=3, feature_dim=net.num_features)
    loader = DataLoader(Dataset(_items(n=8)), batch_size=8)
    optimizer = torch.optim.Adam(net.parameters())
    twice = LearningToVoteTrainer("cpu", 1, loader, net, optimizer, strategy,
                                  inferer=lambda x, network: (network(x) + network(x)) / 2)
    with pytest.raises(RuntimeError, match="ran network.head 2 times"):
        twice.run()
    with pytest.raises(TypeError, match="no 'head' module"):
        LearningToVoteTrainer("cpu", 1, loader, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3)),
                              optimizer, strategy)
    with pytest.raises(ValueError, match="accumulation_steps"):
        LearningToVoteTrainer("cpu", 1, loader, net, optimizer, strategy, accumulation_steps=2)


def test_the_loss_scale_reaches_the_vote_as_an_argument() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    strategy = PaperVote(num_sets=3, feature_dim=net.num_features)
    batch = {k: torch.as_tensor(np.stack([it[k] for it in _items(n=8)])) for k in ("image", "labels")}
    features = net.features(batch["image"])
    logits = net.head(features)
    plain = strategy(batch, logits, features, net)
    scaled = strategy(batch, logits, features, net, grad_scale=2.0**16)
    # The virtual step's gradients are taken on the scaled loss and divided back: the same vote.
    assert torch.allclose(plain.weights, scaled.weights, atol=1e-6) and torch.allclose(plain.loss, scaled.loss, atol=1e-6)
    assert not hasattr(strategy, "grad_scale")  # nothing is written into the strategy


class ScaleRecordingVote(PaperVote):
    """The paper's vote, remembering the ``grad_scale`` each step handed it."""

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        self.seen = grad_scale
        return super().forward(batch, logits, features, network, grad_scale)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP's GradScaler needs CUDA")
def test_amp_hands_its_loss_scale_to_the_strategy() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3).cuda()
    strategy = ScaleRecordingVote(num_sets=3, feature_dim=net.num_features)
    loader = DataLoader(Dataset(_items(n=8)), batch_size=8)
    trainer = LearningToVoteTrainer("cuda", 1, loader, net, torch.optim.Adam(strategy.param_groups(net, 1e-2)), strategy,
                                    amp=True, decollate=False)
    scale = float(trainer.scaler.get_scale())
    trainer.run()
    assert strategy.seen == scale > 1.0
    assert np.isfinite(trainer.state.output["loss"].item())
