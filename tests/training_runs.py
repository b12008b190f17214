"""Training runs in subprocesses for the fault tests: the command, its log, and what a killed run left.

Not a test module: ``test_faults_resume`` and ``test_faults_cluster`` share these, and their fixtures
(``tree``, ``reference``) are in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TRAIN = ROOT / "bundle" / "configs" / "train.json"
EPOCHS = 3
ITERATIONS_PER_EPOCH = 3  # 10 training images at batch 4
# On the CPU even where a GPU exists: the resumed run is compared bit for bit with an uninterrupted one.
SMALL = ["--image_size", "64", "--batch_size", "4", "--num_workers", "0", "--log_every", "1",
         "--device", "$torch.device('cpu')", "--amp", "False"]
ITERATION_LINE = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/\d+ -- (.*)$")
BEST_LINE = re.compile(r"best val_macro_auc: (\S+) at epoch (\d+)")


def env() -> dict[str, str]:
    # One thread: the uninterrupted and the resumed run must compute bit-identical numbers.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(TESTS), os.environ.get("PYTHONPATH", "")])}


def command(configs: list[Path], bundle_root: Path, dataset_dir: Path, *extra: str) -> list[str]:
    files = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", files,
            "--dataset_dir", str(dataset_dir), "--bundle_root", str(bundle_root), *SMALL, *extra]


def run_training(configs: list[Path], bundle_root: Path, dataset_dir: Path, *extra: str, ok: bool = True) -> str:
    proc = subprocess.run(command(configs, bundle_root, dataset_dir, *extra), cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, log[-6000:]
    else:
        assert proc.returncode != 0, log[-3000:]
    return log


def watch_run(argv: list[str], marker: str, act: Callable[[subprocess.Popen], None],
              process_group: bool = False, timeout: float = 300) -> tuple[str, int]:
    """Start ``argv``, call ``act(proc)`` once a printed line contains ``marker``, wait for the end.

    Returns the log and the exit status. ``process_group``: the run is a process group of its own
    (a job, as a scheduler sees it). A run that never prints ``marker`` fails the test and is killed."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **({"process_group": 0} if process_group else {}))
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    acted = False
    try:
        deadline = time.monotonic() + timeout
        while True:
            line = lines.get(timeout=max(1.0, deadline - time.monotonic()))
            if line is None:
                break
            seen.append(line)
            if marker in line and not acted:
                act(proc)
                acted = True
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()  # the marker never came, or the run hangs: do not leave it running
            proc.wait(timeout=60)
    assert acted, f"the run ended before {marker!r}:\n{''.join(seen)[-6000:]}"
    return "".join(seen), proc.returncode


def run_until_killed(configs: list[Path], bundle_root: Path, dataset_dir: Path, marker: str, *extra: str) -> str:
    """Start a training run, SIGKILL it as soon as a line containing ``marker`` is printed; returns the log."""
    # kill -9: no handler, no cleanup, no final save
    log, status = watch_run(command(configs, bundle_root, dataset_dir, *extra), marker,
                            lambda proc: os.kill(proc.pid, signal.SIGKILL))
    assert status == -signal.SIGKILL
    return log


def iteration_losses(log: str) -> dict[tuple[int, int], str]:
    """``{(epoch, iteration): "train_loss: ... train_model_loss: ..."}`` from StatsHandler lines."""
    out = {}
    for line in log.splitlines():
        match = ITERATION_LINE.search(line)
        if match:
            out[(int(match.group(1)), int(match.group(2)))] = match.group(3).strip()
    return out


def load_all(models: Path) -> dict[str, dict]:
    """Every file in ``models/``, each loaded with ``weights_only=True`` (a damaged file fails here)."""
    return {p.name: torch.load(p, map_location="cpu", weights_only=True) for p in sorted(models.iterdir())}


def assert_same_state(a: dict, b: dict, where: str = "") -> None:
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], dict):
            assert_same_state(a[key], b[key], f"{where}/{key}")
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{where}/{key} differs"
        elif isinstance(a[key], (list, tuple)) and a[key] and isinstance(a[key][0], dict):
            for i, (x, y) in enumerate(zip(a[key], b[key])):
                assert_same_state(x, y, f"{where}/{key}[{i}]")
        else:
            assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key]), f"{where}/{key}: {a[key]} != {b[key]}"


def pause_overlay(folder: Path, iteration: int) -> Path:
    """A config overlay whose trainer prints FAULT-PAUSE and sleeps after ``iteration`` (global count)."""
    config = json.loads(TRAIN.read_text())
    overlay = {
        "imports": config["imports"] + ["$import time", "$from ignite.engine import Events"],
        "initialize": config["initialize"] + [
            f"$@train#trainer.add_event_handler(Events.ITERATION_COMPLETED(once={iteration}), "
            "lambda engine: (print('FAULT-PAUSE', flush=True), time.sleep(600)))"
        ],
    }
    path = folder / f"pause_at_{iteration}.json"
    path.write_text(json.dumps(overlay))
    return path
