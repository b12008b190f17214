"""Faults that test config overlays cause inside a training run (not a test module).

Each function is called from a trainer event handler that a test overlay adds; the tests then act
from outside (signals, kills, a second run) or look at what the run left behind.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any


def wait_for_signal(stop: Any, marker: str = "FAULT-WAIT") -> None:
    """Print ``marker`` and wait until ``stop`` (a StopOnSignal) has received a signal (at most 120 s)."""
    print(marker, flush=True)
    deadline = time.monotonic() + 120
    while not stop.requested and time.monotonic() < deadline:
        time.sleep(0.02)


def nan_image(batch: dict) -> None:
    """Make this iteration's images NaN, so the real forward pass gives a NaN loss."""
    batch["image"].fill_(float("nan"))


def fill_disk(folder: str | Path) -> None:
    """Fill the filesystem of ``folder`` with a file ``filler`` in it, as another job would."""
    path = Path(folder) / "filler"
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as out:
        try:
            while out.write(chunk):
                pass
        except OSError:
            pass
    print(f"FAULT-DISK-FULL {shutil.disk_usage(folder).free} bytes free", flush=True)
    os.sync()


def pause_rank(rank: int, seconds: float = 600) -> None:
    """On DDP rank ``rank`` of a torchrun group's first attempt: print ``FAULT-RANK-PID <pid>`` and sleep."""
    import torch.distributed as dist

    if dist.get_rank() == rank and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        print(f"FAULT-RANK-PID {os.getpid()}", flush=True)
        time.sleep(seconds)
