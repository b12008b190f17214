"""The Ignite trainer: one epoch fires MONAI's events; postprocessing and metrics see its output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Average
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.handlers import from_engine
from monai.transforms import Activationsd, Compose

from l2v_monai.strategies import build_strategy, attach_targets
from l2v_monai.trainer import LabelSetBatch, LearningToVoteTrainer
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


@pytest.mark.parametrize("strategy_name", ["l2v", "majority", "mean", "single", "cm", "dawid_skene", "consensus"])
def test_one_epoch_fires_events_and_feeds_postprocessing_and_metrics(strategy_name: str) -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    strategy = build_strategy(strategy_name, num_sets=3, num_outputs=3, feature_dim=net.num_features)
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
    if strategy_name == "l2v":
        assert trainer.state.output[0]["vote_weights"].shape == (3,)


def test_image_and_report_batches_reach_the_network() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3, report_dim=5)
    strategy = build_strategy("l2v", num_sets=3, num_outputs=3, feature_dim=net.num_features)
    loader = DataLoader(Dataset(_items(report_dim=5)), batch_size=8)
    trainer = LearningToVoteTrainer("cpu", 1, loader, net, torch.optim.Adam(strategy.param_groups(net, 1e-2)), strategy, decollate=False)
    trainer.run()
    assert net.report.weight.grad is not None and net.report.weight.grad.abs().sum() > 0
    assert strategy.head.attn.weight.grad.abs().sum() > 0


def test_vote_head_parameters_are_in_the_optimizer_and_move() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=3)
    strategy = build_strategy("l2v", num_sets=3, num_outputs=3, feature_dim=net.num_features, options={"l2v": {"k": 5.0}})
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
