"""Preemption: SIGTERM or SIGINT ends the current iteration, writes ``checkpoint.pt`` and exits 128 + signal.

Schedulers stop jobs with SIGTERM (Slurm, Kubernetes, torchrun's agent) and people with Ctrl-C.
:class:`StopOnSignal` turns the first of either into a clean stop: the Python handler only sets a
flag; after the iteration in progress the trainer writes ``checkpoint.pt`` (atomically, with the
epoch's order, see :mod:`l2v_monai.engine.epoch_position`) and terminates, and
:meth:`StopOnSignal.exit_if_stopped` then exits with status 143 (SIGTERM) or 130 (SIGINT), the
statuses of a process ended by that signal, which requeue rules treat as "stopped, not failed".
A signal during validation takes effect when validation ends, with the epoch's own checkpoint.
DataLoader workers ignore both signals: Slurm and Ctrl-C signal every process of the job, and a
worker killed by them would fail the run before the checkpoint; the workers end with the run.
A second signal while the first is handled gets the default action (ends the process at once).
Under DDP the ranks agree on the flag every iteration (an all-reduce of one number), so they stop
at the same iteration.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events

__all__ = ["StopOnSignal", "WorkerIgnoresStopSignals"]

logger = logging.getLogger(__name__)


class WorkerIgnoresStopSignals:
    """A DataLoader ``worker_init_fn`` that ignores the stop signals, then runs the loader's own one."""

    def __init__(self, signals: Sequence[signal.Signals], then: Callable[[int], Any] | None = None) -> None:
        self.signals = list(signals)
        self.then = then

    def __call__(self, worker_id: int) -> None:
        for sig in self.signals:
            signal.signal(sig, signal.SIG_IGN)
        if self.then is not None:
            self.then(worker_id)


class StopOnSignal:
    """Stop training cleanly on SIGTERM/SIGINT, with a checkpoint to resume from (``--resume True``).

    Attach after the epoch checkpoint saver, so that at the end of an epoch the epoch's checkpoint
    (with its validation) is written before the run stops.

    Args:
        checkpoint_saver: what writes ``checkpoint.pt`` (an object with ``save()`` and ``path``).
        signals: names of the signals to handle.
    """

    def __init__(self, checkpoint_saver: Any, signals: Sequence[str] = ("SIGTERM", "SIGINT")) -> None:
        self.checkpoint_saver = checkpoint_saver
        self.signals = [signal.Signals[name] for name in signals]
        self.requested = 0  # the signal number received, 0 for none
        self.stopped_at: tuple[int, int] | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def attach(self, engine: Engine) -> None:
        loader = getattr(engine, "data_loader", None)
        if loader is not None and getattr(loader, "num_workers", 0) > 0:
            loader.worker_init_fn = WorkerIgnoresStopSignals(self.signals, loader.worker_init_fn)
        engine.add_event_handler(Events.STARTED, self.install)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.after_iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.after_epoch)
        engine.add_event_handler(Events.COMPLETED, self.uninstall)

    def install(self, engine: Engine | None = None) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training runs outside the main thread: SIGTERM/SIGINT stop it without a checkpoint")
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self, engine: Engine | None = None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            # A second signal: the user or the scheduler will not wait; give the signal its default action.
            self.uninstall()
            signal.raise_signal(signum)
            return
        self.requested = signum  # only a flag here: logging or saving inside a signal handler is unsafe

    def _agreed(self) -> int:
        if idist.get_world_size() > 1:
            # A number, not a tensor: ignite puts it on the backend's device (CUDA for NCCL).
            return int(idist.all_reduce(float(self.requested), op="MAX"))
        return self.requested

    def after_iteration(self, engine: Engine) -> None:
        requested = self._agreed()
        if not requested:
            return
        self.requested = requested
        length = engine.state.epoch_length
        if length and engine.state.iteration % length == 0:
            return  # the epoch's last iteration: validation and the epoch's checkpoint run first (after_epoch)
        self.checkpoint_saver.save()
        self._stop(engine)

    def after_epoch(self, engine: Engine) -> None:
        requested = self._agreed()
        if requested:
            self.requested = requested
            self._stop(engine)

    def _stop(self, engine: Engine) -> None:
        length = engine.state.epoch_length or 0
        done = engine.state.iteration % length if length else engine.state.iteration
        self.stopped_at = (engine.state.epoch, done or length)
        logger.warning(
            "%s: stopped after epoch %d, iteration %d/%d; %s is written. Continue with the same command and "
            "--resume True (exit status %d)", signal.Signals(self.requested).name, engine.state.epoch,
            done or length, length, self.checkpoint_saver.path, self.exit_status,
        )
        self.uninstall()
        engine.terminate()

    @property
    def exit_status(self) -> int:
        return 128 + self.requested if self.requested else 0

    def exit_if_stopped(self) -> None:
        """After ``trainer.run()``: exit with 128 + the signal when a signal stopped the run, else return."""
        if self.stopped_at is not None:
            raise SystemExit(self.exit_status)
