"""Faults during training: ``kill -9`` mid-epoch and mid-checkpoint-write, resume, stale runs, visible losses.

The end-to-end tests run ``python -m monai.bundle run training`` in subprocesses on a small
synthetic MIMIC tree (tests/mimic_tree.py) with a tiny network (tests/tiny_nets.py) and kill
them with SIGKILL at two deterministic points:

* mid-epoch: a test overlay adds a trainer handler that prints ``FAULT-PAUSE`` and sleeps at a
  chosen iteration; the test kills the process when it reads that line;
* mid-checkpoint-write: ``--train#checkpoint_saver#pause_mid_write 600`` makes the saver sleep
  after writing half of the temporary file (it logs ``fault injection: pausing``); the test
  kills the process then, so the kill lands between the two halves of the write.

The resumed run must end exactly where an uninterrupted run ends (same per-iteration losses,
same weights, same best model), which needs the trainer, network, optimizer, strategy, the
evaluator's best metric and every RNG stream restored.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from training_runs import (
    BEST_LINE,
    EPOCHS,
    ITERATIONS_PER_EPOCH,
    assert_same_state,
    iteration_losses,
    load_all,
    pause_overlay,
    run_training,
    run_until_killed,
)

# ----------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------
def test_training_shows_every_loss_term_per_iteration_and_epoch_and_a_progress_bar(reference: dict) -> None:
    log = reference["log"]
    assert "non-scalar" not in log  # the 1-tuple from from_engine(['loss'], first=True) is gone
    losses = iteration_losses(log)
    assert sorted(losses) == [(e, i) for e in range(1, EPOCHS + 1) for i in range(1, ITERATIONS_PER_EPOCH + 1)]
    # The default vote's loss terms, beside the total (StrategyOutput.extras).
    first = losses[(1, 1)]
    for term in ("train_loss", "train_model_loss"):
        assert re.search(rf"\b{term}: \d+\.\d{{4}}", first), first
    assert len(re.findall(r"Epoch\[\d\] Metrics -- .*epoch_train_loss: \d+\.\d{4}", log)) == EPOCHS
    assert f"[{ITERATIONS_PER_EPOCH}/{ITERATIONS_PER_EPOCH}]" in log  # ignite's bar, forced on in a non-tty
    event_files = list((reference["root"] / "eval").glob("events.out.tfevents.*"))
    assert event_files, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in event_files:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train_loss", "train_model_loss", "epoch_train_loss", "val_macro_auc"} <= tags


@pytest.mark.slow
def test_kill_9_mid_epoch_and_mid_checkpoint_write_then_resume_equals_an_uninterrupted_run(
    tree: dict, reference: dict, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    last = EPOCHS
    # 1. kill -9 in the middle of the last epoch (after its 2nd iteration).
    pause = pause_overlay(tmp_path, (last - 1) * ITERATIONS_PER_EPOCH + 2)
    log = run_until_killed(tree["configs"] + [pause], tmp_path, tree["root"], "FAULT-PAUSE", "--epochs", str(EPOCHS))
    assert f"Epoch: {last}/{EPOCHS}, Iter: 2/" in log
    files = load_all(models)
    assert set(files) == {"checkpoint.pt", "checkpoint.previous.pt", "model.pt"}
    assert files["checkpoint.pt"]["trainer"]["iteration"] == (last - 1) * ITERATIONS_PER_EPOCH  # written every epoch, not only at the end
    # The checkpoint carries what resuming needs beyond the engine counters.
    assert {"trainer", "network", "optimizer", "strategy", "validation", "rng"} <= set(files["checkpoint.pt"])

    # 2. resume, and kill -9 while the last epoch's checkpoint is half written.
    log = run_until_killed(tree["configs"], tmp_path, tree["root"], "fault injection: pausing",
                           "--epochs", str(EPOCHS), "--resume", "True", "--train#checkpoint_saver#pause_mid_write", "600")
    assert f"Epoch: {last - 1}/{EPOCHS}" not in log and f"Epoch: {last}/{EPOCHS}, Iter: 1/" in log
    partial = list(models.glob(".checkpoint.pt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    with pytest.raises(Exception):
        torch.load(partial[0], map_location="cpu", weights_only=True)  # the half-written bytes are not a checkpoint
    kept = torch.load(models / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert kept["trainer"]["iteration"] == (last - 1) * ITERATIONS_PER_EPOCH  # the last good checkpoint survived the interrupted write

    # 3. resume to the end.
    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", str(EPOCHS), "--resume", "True")
    assert "interrupted checkpoint write" in log and not list(models.glob("*.tmp"))
    assert f"Epoch: {last - 1}/{EPOCHS}" not in log  # the epoch counter continues
    files = load_all(models)  # every file in models/ loads with weights_only=True
    assert set(files) == {"checkpoint.pt", "checkpoint.previous.pt", "model.pt"}
    assert files["checkpoint.pt"]["trainer"]["iteration"] == EPOCHS * ITERATIONS_PER_EPOCH

    # Same batches, same numbers: the resumed epoch's losses and the final state equal the uninterrupted run's.
    resumed, uninterrupted = iteration_losses(log), iteration_losses(reference["log"])
    assert sorted(resumed) == [(last, i) for i in range(1, ITERATIONS_PER_EPOCH + 1)]
    assert all(resumed[k] == uninterrupted[k] for k in resumed), (resumed, uninterrupted)
    assert_same_state(files["checkpoint.pt"], reference["files"]["checkpoint.pt"])
    # model.pt holds the best validation metric's network, whichever epoch that was, not the last one's.
    assert_same_state(files["model.pt"], reference["files"]["model.pt"])
    best = BEST_LINE.search(log).groups()
    assert best == BEST_LINE.search(reference["log"]).groups()
    validation = files["checkpoint.pt"]["validation"]
    assert validation["best_metric_epoch"] == int(best[1])
    assert validation["best_metric"] == pytest.approx(float(best[0]))


def test_a_new_run_refuses_a_folder_with_another_runs_checkpoint(tree: dict, reference: dict, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(reference["root"] / "models", tmp_path / "models")
    before = {p.name: p.read_bytes() for p in (tmp_path / "models").iterdir()}
    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", "1", ok=False)
    assert "already holds checkpoint.pt, model.pt" in log
    assert "--resume True" in log and "--overwrite True" in log
    assert "caching chest X-rays" not in log  # refused before any image is read
    assert {p.name: p.read_bytes() for p in (tmp_path / "models").iterdir()} == before  # nothing touched


# ----------------------------------------------------------------------------------------------
# the pieces, in process
# ----------------------------------------------------------------------------------------------
def test_prepare_checkpoint_dir_resume_and_overwrite(tmp_path: Path) -> None:
    from l2v_monai.engine.checkpoints import prepare_checkpoint_dir

    with pytest.raises(FileNotFoundError, match=r"--resume True: there is no .*checkpoint.pt to resume from"):
        prepare_checkpoint_dir(tmp_path / "models", resume=True)
    models = prepare_checkpoint_dir(tmp_path / "models")  # a fresh run in an empty folder
    (models / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with pytest.raises(RuntimeError, match=r"checkpoint.pt cannot be read"):
        prepare_checkpoint_dir(models, resume=True)
    with pytest.raises(ValueError, match="contradict"):
        prepare_checkpoint_dir(models, resume=True, overwrite=True)
    (models / ".model.pt.abc123.tmp").write_bytes(b"half")
    (models / "model.ts").write_bytes(b"an export, not ours")
    prepare_checkpoint_dir(models, overwrite=True)
    assert sorted(p.name for p in models.iterdir()) == ["model.ts"]


def test_atomic_saver_never_removes_the_fixed_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    from l2v_monai.engine.checkpoints import AtomicDiskSaver

    saver = AtomicDiskSaver(tmp_path, filename="checkpoint.pt")
    saver({"w": torch.arange(3)}, "ignored_name.pt")
    saver.remove("checkpoint.pt")  # what ignite's Checkpoint calls before the next save
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["w"].tolist() == [0, 1, 2]
    saver({"w": torch.arange(4)})
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["w"].tolist() == [0, 1, 2, 3]

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError, match="cannot serialise"):
        saver({"w": Unpicklable()})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["w"].tolist() == [0, 1, 2, 3]


def test_best_metric_state_round_trip_keeps_model_pt_from_a_worse_epoch(tmp_path: Path) -> None:
    from l2v_monai.engine.checkpoints import BestMetricState, BestModelSaver

    net = torch.nn.Linear(2, 1)
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = 0.61, 2
    saved = BestMetricState(evaluator).state_dict()
    # A resumed run: a fresh evaluator (MONAI starts at best_metric=-1, epoch -1) gets the saved best back.
    fresh = Engine(lambda engine, batch: None)
    fresh.state.best_metric, fresh.state.best_metric_epoch = -1, -1
    BestMetricState(fresh).load_state_dict(saved)
    assert (fresh.state.best_metric, fresh.state.best_metric_epoch) == (0.61, 2)
    saver = BestModelSaver(tmp_path, net)
    fresh.state.epoch = 3  # epoch 3 was worse: MONAI leaves best_metric_epoch at 2, so nothing is written
    saver(fresh)
    assert not (tmp_path / "model.pt").exists()
    fresh.state.best_metric_epoch = 3  # epoch 3 was better
    saver(fresh)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], net.weight.detach())


def test_rng_state_restores_every_stream(tmp_path: Path) -> None:
    import random

    from l2v_monai.engine.checkpoints import AtomicDiskSaver, RNGState
    from l2v_monai.strategies import build_strategy

    strategy = build_strategy("majority", num_sets=2, num_outputs=3, feature_dim=4, options={"majority": {"seed": 0}})
    shuffle = torch.Generator().manual_seed(5)
    state = RNGState(generators={"train_shuffle": shuffle}, modules=[strategy])
    assert "module0.generator" in state.generators  # the strategy's tie-breaking generator was found

    def draw() -> list:
        gens = list(state.generators.values())
        return [torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random(),
                [torch.randperm(5, generator=g).tolist() for g in gens]]

    AtomicDiskSaver(tmp_path, filename="rng.pt")(state.state_dict())
    expected = draw()
    assert draw() != expected  # the streams moved on
    state.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draw() == expected


def test_macro_auc_never_nan_and_clear_error_when_nothing_is_scorable(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from monai.handlers import from_engine

    from l2v_monai.evaluation import MacroAUCHandler

    findings = ["Atelectasis", "Edema", "Fracture"]
    y = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 0.0, float("nan")], [1.0, 0.0, float("nan")]])
    pred = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.4, 0.3], [0.7, 0.2, 0.3]])
    engine = Engine(lambda engine, batch: batch)
    handler = MacroAUCHandler(findings=findings, output_transform=from_engine(["pred", "label"]))
    handler.attach(engine, "val_macro_auc")
    with caplog.at_level(logging.INFO, logger="l2v_monai.evaluation"):
        engine.run([{"pred": pred, "label": y}], max_epochs=1)
    assert engine.state.metrics["val_macro_auc"] == 1.0
    assert any("Edema (only negatives), Fracture (no labels)" in r.getMessage() for r in caplog.records)
    one_class = Engine(lambda engine, batch: batch)
    MacroAUCHandler(findings=findings, output_transform=from_engine(["pred", "label"])).attach(one_class, "auc")
    with pytest.raises(ValueError, match=r"no finding can be scored.*Atelectasis \(only positives\)"):
        one_class.run([{"pred": pred, "label": torch.ones_like(y)}], max_epochs=1)


def test_epoch_loss_means_average_the_loss_terms() -> None:
    from l2v_monai.engine.progress import EpochLossMeans, loss_terms

    outputs = [{"loss": torch.tensor(1.0), "model_loss": torch.tensor(0.5), "pred": torch.zeros(2, 3)},
               {"loss": torch.tensor(3.0), "model_loss": torch.tensor(1.5), "pred": torch.zeros(2, 3)}]
    assert loss_terms(outputs[0]) == {"train_loss": 1.0, "train_model_loss": 0.5}
    engine = Engine(lambda engine, batch: batch)
    EpochLossMeans().attach(engine)
    engine.run(outputs, max_epochs=1)
    assert engine.state.metrics == {"epoch_train_loss": 2.0, "epoch_train_model_loss": 1.0}
    assert Events.EPOCH_COMPLETED in engine._event_handlers


def test_grad_scaler_state_restores_the_amp_loss_scale(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from l2v_monai.engine.checkpoints import AtomicDiskSaver, GradScalerState

    before = SimpleNamespace(scaler=torch.amp.GradScaler("cpu", init_scale=8.0))
    before.scaler.scale(torch.tensor(1.0))  # the scale exists once a loss was scaled
    AtomicDiskSaver(tmp_path, filename="scaler.pt")(GradScalerState(before).state_dict())
    after = SimpleNamespace(scaler=torch.amp.GradScaler("cpu"))  # a resumed run starts at 65536
    GradScalerState(after).load_state_dict(torch.load(tmp_path / "scaler.pt", weights_only=True))
    assert after.scaler.get_scale() == 8.0
    assert GradScalerState(SimpleNamespace(scaler=None)).state_dict() == {}  # no AMP on the CPU
