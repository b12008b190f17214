"""The bundle's commands in subprocesses, as a user types them (not a test module; the ``mimic`` tree they
run on is a fixture in ``conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
SMALL = ["--image_size", "64", "--batch_size", "4", "--epochs", "1", "--num_workers", "0"]


def bundle(*args: str, cwd: Path = ROOT, launcher: list[str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + ["-m", "monai.bundle", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def configs(*names: str) -> str:
    return "[" + ",".join(f"'{CONFIGS / n}'" for n in names) + "]"


def output_root(path: Path) -> Path:
    """A ``--bundle_root`` outside the repository, without the bundle's ``scripts/``: the network is still
    imported from the configs' own bundle, and the run writes its ``models/`` and ``eval/`` there."""
    path.mkdir(parents=True, exist_ok=True)
    return path
