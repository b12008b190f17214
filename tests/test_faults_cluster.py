"""What shared clusters do to training: preemption signals, a NaN loss, a full disk, a damaged checkpoint,
two runs in one folder, a changed config on resume.

Every test causes the fault for real on a ``python -m monai.bundle run training`` subprocess (the
small synthetic MIMIC tree and tiny network of tests/test_faults_resume.py): it sends SIGTERM or
SIGINT, makes a batch NaN inside the real training step (tests/fault_injection.py), fills a real
tmpfs, truncates a real checkpoint, or starts a second process. Where a run is resumed, its end
state is compared bit for bit with an uninterrupted run's, as the ``kill -9`` test does.
"""

# ruff: noqa: F811 - the fixtures tree and reference are imported from test_faults_resume
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import torch
from training_runs import (
    BEST_LINE,
    EPOCHS,
    ITERATIONS_PER_EPOCH,
    ROOT,
    TRAIN,
    assert_same_state,
    command,
    env,
    iteration_losses,
    load_all,
    pause_overlay,
    run_training,
    watch_run,
)


def overlay(folder: Path, name: str, *handlers: str, base: Path = TRAIN) -> Path:
    """A config overlay that adds trainer event handlers (expressions) after ``base``'s initialize."""
    config = json.loads(base.read_text())
    path = folder / f"{name}.json"
    path.write_text(json.dumps({
        "imports": config["imports"] + ["$from ignite.engine import Events", "$import fault_injection"],
        "initialize": config["initialize"] + [f"$@train#trainer.add_event_handler({h})" for h in handlers],
    }))
    return path


def run_with_fault(configs: list[Path], bundle_root: Path, dataset_dir: Path, marker: str,
                   act: Callable[[subprocess.Popen], None], *extra: str) -> tuple[str, int]:
    """Start a training run as a job of its own (a process group), call ``act(proc)`` when a line
    containing ``marker`` is printed, wait for the end; returns the log and the exit status."""
    return watch_run(command(configs, bundle_root, dataset_dir, *extra), marker, act, process_group=True)


def send(sig: signal.Signals) -> Callable[[subprocess.Popen], None]:
    return lambda proc: os.kill(proc.pid, sig)


def assert_resumed_equals_reference(log: str, models: Path, reference: dict, epochs: list[int],
                                    same_global_torch_rng: bool = True) -> None:
    resumed, uninterrupted = iteration_losses(log), iteration_losses(reference["log"])
    assert {e for e, _ in resumed} == set(epochs), sorted(resumed)
    assert all(resumed[k] == uninterrupted[k] for k in resumed), (resumed, uninterrupted)
    files = load_all(models)
    expected = reference["files"]["checkpoint.pt"]
    if not same_global_torch_rng:
        # Loader workers draw from the global torch stream, the worker-less reference run does not.
        files["checkpoint.pt"]["rng"].pop("torch")
        expected = {**expected, "rng": {k: v for k, v in expected["rng"].items() if k != "torch"}}
    assert_same_state(files["checkpoint.pt"], expected)
    assert_same_state(files["model.pt"], reference["files"]["model.pt"])
    assert BEST_LINE.search(log).groups() == BEST_LINE.search(reference["log"]).groups()


# ----------------------------------------------------------------------------------------------
# 1. preemption: SIGTERM mid-epoch, SIGINT at an epoch's end
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_mid_epoch_writes_a_checkpoint_exits_143_and_resumes_at_the_next_batch(
    tree: dict, reference: dict, tmp_path: Path
) -> None:
    stop_after = (EPOCHS - 1) * ITERATIONS_PER_EPOCH + 2  # epoch 3, iteration 2 of 3
    wait = overlay(tmp_path, "wait", f"Events.ITERATION_STARTED(once={stop_after}), "
                   "lambda engine: fault_injection.wait_for_signal(@train#stop_on_signal)")
    log, status = run_with_fault(tree["configs"] + [wait], tmp_path, tree["root"], "FAULT-WAIT",
                                 send(signal.SIGTERM), "--epochs", str(EPOCHS))
    assert status == 143, log[-4000:]
    assert f"SIGTERM: stopped after epoch {EPOCHS}, iteration 2/{ITERATIONS_PER_EPOCH}" in log
    assert "--resume True" in log and "exit status 143" in log
    models = tmp_path / "models"
    assert not list(models.glob("*.tmp"))
    saved = torch.load(models / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert saved["trainer"]["iteration"] == stop_after  # the iteration that was running, finished and saved
    assert "shuffle_at_epoch_start" in saved["epoch_position"]

    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", str(EPOCHS), "--resume", "True")
    assert f"resuming epoch {EPOCHS} at batch 3 of {ITERATIONS_PER_EPOCH}" in log
    assert sorted(iteration_losses(log)) == [(EPOCHS, ITERATIONS_PER_EPOCH)]  # only the batch not yet trained on
    assert_resumed_equals_reference(log, models, reference, [EPOCHS])
    # The epoch's mean losses cover the whole epoch, the batches before the stop included.
    means = re.compile(rf"Epoch\[{EPOCHS}\] Metrics -- .*epoch_train_loss: \S+")
    assert means.search(log).group(0) == means.search(reference["log"]).group(0)


@pytest.mark.slow
def test_sigterm_to_every_process_of_the_job_with_loader_workers_still_checkpoints_and_resumes(
    tree: dict, reference: dict, tmp_path: Path
) -> None:
    """Slurm signals the whole job, DataLoader workers included: they ignore it and the run stops cleanly."""
    stop_after = ITERATIONS_PER_EPOCH + 1  # epoch 2, iteration 1
    wait = overlay(tmp_path, "wait", f"Events.ITERATION_STARTED(once={stop_after}), "
                   "lambda engine: fault_injection.wait_for_signal(@train#stop_on_signal)")
    log, status = run_with_fault(tree["configs"] + [wait], tmp_path, tree["root"], "FAULT-WAIT",
                                 lambda proc: os.killpg(proc.pid, signal.SIGTERM), "--epochs", str(EPOCHS),
                                 "--num_workers", "2")
    assert status == 143, log[-4000:]
    assert f"SIGTERM: stopped after epoch 2, iteration 1/{ITERATIONS_PER_EPOCH}" in log
    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", str(EPOCHS), "--resume", "True",
                       "--num_workers", "2")
    assert f"resuming epoch 2 at batch 2 of {ITERATIONS_PER_EPOCH}" in log
    assert_resumed_equals_reference(log, tmp_path / "models", reference, list(range(2, EPOCHS + 1)),
                                    same_global_torch_rng=False)


@pytest.mark.slow
def test_sigint_at_the_end_of_an_epoch_validates_saves_the_epoch_and_exits_130(
    tree: dict, reference: dict, tmp_path: Path
) -> None:
    wait = overlay(tmp_path, "wait", f"Events.ITERATION_STARTED(once={ITERATIONS_PER_EPOCH}), "
                   "lambda engine: fault_injection.wait_for_signal(@train#stop_on_signal)")
    log, status = run_with_fault(tree["configs"] + [wait], tmp_path, tree["root"], "FAULT-WAIT",
                                 send(signal.SIGINT), "--epochs", str(EPOCHS))
    assert status == 130, log[-4000:]
    assert f"SIGINT: stopped after epoch 1, iteration {ITERATIONS_PER_EPOCH}/{ITERATIONS_PER_EPOCH}" in log
    assert "Epoch[1] Metrics -- val_macro_auc" in log  # the epoch was validated before the stop
    saved = torch.load(tmp_path / "models" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert saved["trainer"]["iteration"] == ITERATIONS_PER_EPOCH

    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", str(EPOCHS), "--resume", "True")
    assert "resuming epoch" not in log  # an epoch boundary: nothing to skip
    assert_resumed_equals_reference(log, tmp_path / "models", reference, list(range(2, EPOCHS + 1)))


# ----------------------------------------------------------------------------------------------
# 2. a NaN loss
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_nan_loss_stops_with_one_error_and_resume_continues_from_the_last_good_checkpoint(
    tree: dict, reference: dict, tmp_path: Path
) -> None:
    bad = ITERATIONS_PER_EPOCH + 2  # epoch 2, iteration 2
    nan = overlay(tmp_path, "nan", f"Events.ITERATION_STARTED(once={bad}), "
                  "lambda engine: fault_injection.nan_image(engine.state.batch)")
    log = run_training(tree["configs"] + [nan], tmp_path, tree["root"], "--epochs", str(EPOCHS), ok=False)
    cause = log[log.index("The run stopped because of this error:"):]
    # NaN images give NaN logits and a NaN loss: the network's output is named as the cause.
    assert f"non-finite training loss at epoch 2, iteration 2/{ITERATIONS_PER_EPOCH}" in cause
    assert "pred (the network's output) = nan/inf, train_loss = nan" in cause
    assert "--resume True" in cause
    assert "epoch 2: saved" not in log
    files = load_all(tmp_path / "models")
    assert files["checkpoint.pt"]["trainer"]["iteration"] == ITERATIONS_PER_EPOCH  # the last good one
    for name in ("checkpoint.pt", "model.pt"):
        network = files[name]["network"] if name == "checkpoint.pt" else files[name]
        assert all(torch.isfinite(t).all() for t in network.values() if t.is_floating_point()), name

    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", str(EPOCHS), "--resume", "True")
    assert_resumed_equals_reference(log, tmp_path / "models", reference, list(range(2, EPOCHS + 1)))

    # A strategy whose loss turns NaN rather than raising: the guard after the step names every bad term.
    other = tmp_path / "mean"
    log = run_training(tree["configs"] + [nan], other, tree["root"], "--epochs", "2", "--label_strategy", "mean", ok=False)
    cause = log[log.index("The run stopped because of this error:"):]
    assert f"NonFiniteLossError: non-finite training loss at epoch 2, iteration 2/{ITERATIONS_PER_EPOCH}" in cause
    assert "train_loss = nan" in cause
    assert load_all(other / "models")["checkpoint.pt"]["trainer"]["iteration"] == ITERATIONS_PER_EPOCH


def test_non_finite_loss_guard_names_only_the_bad_terms() -> None:
    from ignite.engine import Engine

    from l2v_monai.engine.nonfinite import NonFiniteLossError, StopOnNonFiniteLoss

    outputs = [{"loss": torch.tensor(1.0), "model_loss": torch.tensor(0.5)},
               {"loss": torch.tensor(float("inf")), "model_loss": torch.tensor(0.5), "probe_loss": torch.tensor(float("nan"))}]
    engine = Engine(lambda engine, batch: batch)
    StopOnNonFiniteLoss().attach(engine)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, iteration 2/2 .*train_loss = inf, train_probe_loss = nan\. ") as err:
        engine.run(outputs, max_epochs=1)
    assert "model_loss" not in str(err.value)


# ----------------------------------------------------------------------------------------------
# 5. two runs, one folder
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_run_in_a_busy_folder_is_refused_naming_pid_and_host_and_a_killed_runs_lock_is_taken_over(
    tree: dict, tmp_path: Path
) -> None:
    pause = pause_overlay(tmp_path, ITERATIONS_PER_EPOCH + 1)  # sleeps after epoch 1 was saved
    models = tmp_path / "models"
    first: dict = {}

    def second_run_then_kill(proc: subprocess.Popen) -> None:
        first["pid"] = proc.pid
        first["files"] = {p.name: p.read_bytes() for p in models.iterdir()}
        # Even --overwrite True must not touch a live run's files.
        first["refused"] = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", "2",
                                        "--overwrite", "True", ok=False)
        first["after"] = {p.name: p.read_bytes() for p in models.iterdir()}
        os.kill(proc.pid, signal.SIGKILL)

    _, status = run_with_fault(tree["configs"] + [pause], tmp_path, tree["root"], "FAULT-PAUSE",
                               second_run_then_kill, "--epochs", "2")
    assert status == -signal.SIGKILL
    refused = first["refused"]
    assert f"{models} is in use by another training run: PID {first['pid']} on host {socket.gethostname()}" in refused
    assert "caching chest X-rays" not in refused  # refused at start-up, before any image
    assert first["after"] == first["files"] and "checkpoint.pt" in first["files"]

    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", "2", "--resume", "True")
    assert f"taking over {tmp_path / '.training.lock'}: the run that held it, PID {first['pid']}" in log
    assert "is no longer running" in log and "Epoch: 2/2" in log


# ----------------------------------------------------------------------------------------------
# 7. resume with another config
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_allows_more_epochs_and_refuses_another_network_or_strategy_naming_the_key(
    tree: dict, reference: dict, tmp_path: Path
) -> None:
    shutil.copytree(reference["root"] / "models", tmp_path / "models")
    before = {p.name: p.read_bytes() for p in (tmp_path / "models").iterdir()}
    small_cnn = tmp_path / "small_cnn.json"
    small_cnn.write_text(json.dumps({"network_def": {"_target_": "l2v_monai.bundle_scripts.networks.SmallCNN",
                                                     "num_outputs": "$len(@findings)", "in_channels": 1}}))
    log = run_training([TRAIN, small_cnn], tmp_path, tree["root"], "--epochs", str(EPOCHS + 1), "--resume", "True",
                       ok=False)
    assert "this run's network differs from the run saved in" in log
    assert "network: 'tiny_nets.TinyNet' in the checkpoint, 'l2v_monai.bundle_scripts.networks.SmallCNN' now" in log
    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", str(EPOCHS + 1), "--resume", "True",
                       "--label_strategy", "majority", ok=False)
    assert "this run's label_strategy, strategy_options differ" in log and "label_strategy: 'posterior_vote' in the checkpoint, 'majority' now" in log
    assert "caching chest X-rays" not in log  # refused before any image is read
    assert {p.name: p.read_bytes() for p in (tmp_path / "models").iterdir()} == before

    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", str(EPOCHS + 1), "--resume", "True")
    assert sorted({e for e, _ in iteration_losses(log)}) == [EPOCHS + 1]  # one more epoch, from the saved one


def test_run_identity_names_label_sets_and_findings_that_changed(tmp_path: Path) -> None:
    from l2v_monai.engine.checkpoints import RunIdentity

    saved = RunIdentity({"network": torch.nn.Linear, "label_sets": ("a", "b"), "findings": ["x", "y"],
                         "label_strategy": "l2v", "strategy_options": {"alpha": 0.2}}).state_dict()
    same = RunIdentity({"network": torch.nn.Linear, "label_sets": ["a", "b"], "findings": ["x", "y"],
                        "label_strategy": "l2v", "strategy_options": {"alpha": 0.2}})
    same.check(saved)  # a tuple and a list from JSON are the same
    other = RunIdentity({**saved, "label_sets": ["a", "c"], "findings": ["x"]})
    with pytest.raises(ValueError, match=r"this run's findings, label_sets differ from the run saved in .*"
                                         r"findings: \['x', 'y'\] in the checkpoint, \['x'\] now"):
        other.check(saved, tmp_path / "checkpoint.pt")


# ----------------------------------------------------------------------------------------------
# 3. a full disk while saving
# ----------------------------------------------------------------------------------------------
def _private_tmpfs() -> list[str] | None:
    """``unshare`` arguments for a private mount namespace where this user may mount a tmpfs, or None."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    args = [unshare, "--user", "--map-root-user", "--mount"]
    probe = subprocess.run(args + ["sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d"],
                           capture_output=True, check=False)
    return args if probe.returncode == 0 else None


@pytest.mark.slow
def test_a_full_disk_keeps_the_previous_checkpoint_names_folder_and_bytes_and_resume_continues(
    tree: dict, reference: dict, tmp_path: Path
) -> None:
    import shlex

    unshare = _private_tmpfs()
    if unshare is None:
        pytest.skip("needs a private mount namespace (unshare --user --mount) to mount a small tmpfs")
    mnt, out = tmp_path / "tmpfs", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    fill = overlay(tmp_path, "fill", "Events.EPOCH_STARTED(once=2), lambda engine: fault_injection.fill_disk(@bundle_root)")
    first = command(tree["configs"] + [fill], mnt, tree["root"], "--epochs", str(EPOCHS), "--output_dir", str(out / "eval"))
    again = command(tree["configs"], mnt, tree["root"], "--epochs", str(EPOCHS), "--resume", "True",
                     "--output_dir", str(out / "eval"))
    script = f"""
mount -t tmpfs -o size=8m tmpfs {mnt} || exit 99
cd {ROOT}
{shlex.join(first)} > {out}/log1 2>&1; echo $? > {out}/rc1
cp -a {mnt}/models {out}/after_fault
rm -f {mnt}/filler
{shlex.join(again)} > {out}/log2 2>&1; echo $? > {out}/rc2
cp -a {mnt}/models {out}/after_resume
"""
    proc = subprocess.run(unshare + ["sh", "-c", script], env=env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log1 = (out / "log1").read_text()
    assert (out / "rc1").read_text().strip() != "0", log1[-4000:]
    cause = log1[log1.index("The run stopped because of this error:"):]
    assert f"no space left in {mnt}/models to write " in cause and "bytes needed" in cause
    assert "is intact and no partial file is left" in cause and "--resume True" in cause
    files = load_all(out / "after_fault")  # everything left loads; no temporary file
    assert files["checkpoint.pt"]["trainer"]["iteration"] == ITERATIONS_PER_EPOCH

    log2 = (out / "log2").read_text()
    assert (out / "rc2").read_text().strip() == "0", log2[-4000:]
    assert_resumed_equals_reference(log2, out / "after_resume", reference, list(range(2, EPOCHS + 1)))


# ----------------------------------------------------------------------------------------------
# 4. a damaged checkpoint
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_torn_checkpoint_is_named_and_resume_uses_the_previous_one(
    tree: dict, reference: dict, tmp_path: Path
) -> None:
    run_training(tree["configs"], tmp_path, tree["root"], "--epochs", "2")
    models = tmp_path / "models"
    checkpoint = models / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])  # torn, as by a copy that stopped half way
    log = run_training(tree["configs"], tmp_path, tree["root"], "--epochs", str(EPOCHS), "--resume", "True")
    assert f"{checkpoint} cannot be read" in log
    assert "resuming from the previous checkpoint checkpoint.previous.pt (iteration 3)" in log
    assert (models / "checkpoint.pt.damaged").read_bytes() == data[: len(data) // 2]  # kept for a look
    (models / "checkpoint.pt.damaged").unlink()
    assert_resumed_equals_reference(log, models, reference, list(range(2, EPOCHS + 1)))


def test_a_torn_checkpoint_without_a_previous_one_is_a_clear_error(tmp_path: Path) -> None:
    from l2v_monai.engine.checkpoints import prepare_checkpoint_dir

    models = tmp_path / "models"
    models.mkdir()
    (models / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(RuntimeError, match=r"checkpoint.pt cannot be read .*no readable previous checkpoint .*"
                                           r"checkpoint.previous.pt \(not kept\).*--overwrite True"):
        prepare_checkpoint_dir(models, resume=True)


def test_atomic_saver_full_disk_error_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC injected into the writer (the tmpfs test above causes it for real where it can run)."""
    import errno

    from l2v_monai.engine.checkpoints import AtomicDiskSaver, CheckpointDiskFullError

    saver = AtomicDiskSaver(tmp_path, filename="checkpoint.pt", keep_previous="checkpoint.previous.pt")
    saver({"w": torch.arange(3)})
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointDiskFullError, match=rf"no space left in {tmp_path} to write checkpoint.pt: \d+ bytes needed"):
        saver({"w": torch.arange(4)})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["w"].tolist() == [0, 1, 2]
    saver({"w": torch.arange(5)})
    assert torch.load(tmp_path / "checkpoint.previous.pt", weights_only=True)["w"].tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------------------------
# 8. the proof-of-concept config
# ----------------------------------------------------------------------------------------------
POC = ROOT / "bundle" / "configs" / "cifar10.json"
POC_SMALL = ["--dataset", "digits", "--max_train", "600", "--max_test", "200", "--epochs", "2",
             "--device", "$torch.device('cpu')"]


def _poc(bundle_root: Path, *extra: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(POC), "--bundle_root", str(bundle_root),
            *POC_SMALL, *extra]


@pytest.mark.slow
def test_poc_config_stops_on_sigterm_and_resumes_to_the_same_results(tmp_path: Path) -> None:
    reference = subprocess.run(_poc(tmp_path / "reference"), cwd=ROOT, env=env(), capture_output=True, text=True,
                               timeout=300, check=False)
    assert reference.returncode == 0, (reference.stdout + reference.stderr)[-4000:]
    wait = overlay(tmp_path, "wait", "Events.ITERATION_STARTED(once=24), "
                   "lambda engine: fault_injection.wait_for_signal(@train#stop_on_signal)", base=POC)
    proc = subprocess.Popen(_poc(tmp_path / "run", "--config_file", f"['{POC}','{wait}']"), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = ""
    for line in proc.stdout:  # type: ignore[union-attr]
        log += line
        if "FAULT-WAIT" in line:
            os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, log[-4000:]
    assert "SIGTERM: stopped after epoch 2, iteration 9/15" in log
    (models,) = [p for p in (tmp_path / "run" / "models").iterdir() if p.is_dir()]  # models/poc_digits_l2v_seed0
    assert not list((tmp_path / "run" / "eval").glob("*/results.json"))  # stopped before the results

    resumed = subprocess.run(_poc(tmp_path / "run", "--resume", "True"), cwd=ROOT, env=env(), capture_output=True,
                             text=True, timeout=300, check=False)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "resuming epoch 2 at batch 10 of 15" in resumed.stdout + resumed.stderr
    (ref_results,) = list((tmp_path / "reference" / "eval").glob("*/results.json"))
    (results,) = list((tmp_path / "run" / "eval").glob("*/results.json"))
    a, b = json.loads(ref_results.read_text()), json.loads(results.read_text())
    for key in ("test_accuracy", "history", "vote_weights", "refined_label_accuracy"):
        assert a.get(key) == b.get(key), key
    ref_models = next(p for p in (tmp_path / "reference" / "models").iterdir() if p.is_dir())
    assert_same_state(load_all(models)["checkpoint.pt"], load_all(ref_models)["checkpoint.pt"])


# ----------------------------------------------------------------------------------------------
# 6. a lost DDP rank
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_killing_one_ddp_rank_restarts_the_group_from_the_last_checkpoint(tree: dict, tmp_path: Path) -> None:
    import re
    import sys

    multi = ROOT / "bundle" / "configs" / "multi_gpu_train.json"
    # 10 items over 2 ranks at batch 4: 2 iterations per epoch; rank 1 stops after epoch 1 was saved.
    pause = tmp_path / "pause_rank.json"
    config = json.loads(multi.read_text())
    pause.write_text(json.dumps({
        "imports": json.loads(TRAIN.read_text())["imports"] + config["+imports"]
        + ["$from ignite.engine import Events", "$import fault_injection"],
        "initialize": config["initialize"] + [
            ("$@train#trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), "
             "lambda engine: fault_injection.pause_rank(1))")],
    }))
    single = command([TRAIN, multi, tree["configs"][1], pause], tmp_path, tree["root"], "--epochs", "2")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--max-restarts=1",
                "--master_port=29547", "--monitor-interval=1"]
    argv = torchrun + single[1:]  # torchrun runs "-m monai.bundle ..." in each rank

    proc = subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = ""
    killed = None
    for line in proc.stdout:  # type: ignore[union-attr]
        log += line
        match = re.search(r"FAULT-RANK-PID (\d+)", line)
        if match and killed is None:
            killed = int(match.group(1))
            os.kill(killed, signal.SIGKILL)
    status = proc.wait(timeout=300)
    assert killed is not None, log[-6000:]
    assert status == 0, log[-6000:]
    before, after = log.split(f"FAULT-RANK-PID {killed}", 1)
    assert "Epoch: 1/2" in before
    assert "Restored all variables from" in after and "resuming from" in after
    assert "Epoch: 1/2, Iter" not in after  # epoch 1 came from the checkpoint, not trained again
    first_try = re.search(r"Epoch: 2/2, Iter: 1/2 -- (.*)", before).group(1)
    assert re.search(r"Epoch: 2/2, Iter: 1/2 -- (.*)", after).group(1) == first_try  # the same step again
    saved = torch.load(tmp_path / "models" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert saved["trainer"]["iteration"] == 2 * saved["trainer"]["epoch_length"]
