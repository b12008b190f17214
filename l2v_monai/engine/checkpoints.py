"""Checkpoints that survive ``kill -9``: atomic writes, the best model, and what a resumed run needs.

A training run keeps two files in ``ckpt_dir``:

* ``checkpoint.pt``: everything needed to continue (trainer counters, network, optimizer,
  strategy, the evaluator's best metric and epoch, RNG states), rewritten after every epoch;
* ``model.pt``: the network's ``state_dict`` at the best validation key metric so far;

and ``checkpoint.previous.pt``, the checkpoint before the last one (a hard link to the replaced
file, so keeping it writes nothing), to resume from when ``checkpoint.pt`` is damaged.

Both are written by :class:`AtomicDiskSaver`: the bytes go to a temporary file in the same folder,
are flushed to disk, and only then replace the old file with :func:`os.replace`, so a process
killed at any moment leaves either the old or the new file, never a truncated one, and never no
file. :func:`prepare_checkpoint_dir` runs at start-up: it refuses to mix a new run into a folder
that holds another run's files, checks that ``--resume True`` has something to resume from, and
removes temporary files a killed run left behind, holds the folder's run lock
(:mod:`l2v_monai.engine.run_lock`), falls back to the previous checkpoint when ``checkpoint.pt``
cannot be read, and refuses to resume a run whose identity (network, label sets, findings,
strategy) changed. A full disk stops the run with :class:`CheckpointDiskFullError`, naming the
folder and the bytes needed. :func:`promote_checkpoints` lets a retrain write elsewhere and replace
the serving files only once it has finished. Everything saved loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import random
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver

from l2v_monai.engine.run_lock import LOCK_FILE, acquire_run_lock, lock_holder

__all__ = [
    "CHECKPOINT_FILE",
    "MODEL_FILE",
    "PREVIOUS_CHECKPOINT_FILE",
    "CheckpointDiskFullError",
    "RunIdentity",
    "AtomicDiskSaver",
    "EpochCheckpointSaver",
    "BestModelSaver",
    "BestMetricState",
    "GradScalerState",
    "RNGState",
    "prepare_checkpoint_dir",
    "promote_checkpoints",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.previous.pt"
# Temporary files are hidden and named after their target: ".checkpoint.pt.<random>.tmp".
_TMP_SUFFIX = ".tmp"


def _tmp_prefix(filename: str) -> str:
    return f".{filename}."


def _fsync_dir(dirname: Path) -> None:
    """Make a rename in ``dirname`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointDiskFullError(OSError):
    """No room (or no quota) left to write a checkpoint; the previous file is intact."""


def _state_dict(obj: Any) -> Any:
    # DDP/DataParallel: save the plain module so the file loads into an unwrapped network.
    if isinstance(obj, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        obj = obj.module
    return obj.state_dict()


class AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` whose writes are atomic and durable, optionally to one fixed file name.

    Each save serialises to memory, writes a hidden temporary file in ``dirname``, ``fsync``\\ s it,
    then ``os.replace``\\ s the target and ``fsync``\\ s the folder. ``remove`` of the fixed file
    name does nothing: the next save replaces it, so the last good file is never deleted first
    (ignite's ``Checkpoint`` removes the old file before it writes the new one).
    Only rank ``save_on_rank`` writes, as with ignite's ``DiskSaver``.

    Args:
        dirname: folder of the files (created when missing).
        filename: fixed file name for every save; None keeps the name the caller passes.
        pause_mid_write: fault-injection for tests only: seconds to sleep after half of the
            temporary file is written (logged at WARNING), so that a ``kill -9`` can land inside
            a checkpoint write deterministically. 0 (the default) never pauses.
        keep_previous: file name under which the file being replaced is kept (a hard link: no
            bytes are written); None keeps no previous file.
    """

    def __init__(
        self,
        dirname: str | Path,
        filename: str | None = None,
        save_on_rank: int = 0,
        pause_mid_write: float = 0.0,
        keep_previous: str | None = None,
    ) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False, save_on_rank=save_on_rank)
        self.filename = filename
        self.pause_mid_write = float(pause_mid_write)
        self.keep_previous = keep_previous

    def __call__(self, checkpoint: Mapping, filename: str | None = None, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        buffer = io.BytesIO()
        func(checkpoint, buffer)
        data = buffer.getbuffer()
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=_TMP_SUFFIX, dir=self.dirname)
        except OSError as err:
            full = self._disk_full(err, path, len(data))
            if full is not err:
                raise full from err
            raise
        try:
            with os.fdopen(fd, "wb") as tmp:
                half = len(data) // 2
                tmp.write(data[:half])
                if self.pause_mid_write > 0:
                    tmp.flush()
                    logger.warning(
                        "fault injection: pausing %.0f s with %d of %d bytes of %s written",
                        self.pause_mid_write, half, len(data), path.name,
                    )
                    time.sleep(self.pause_mid_write)
                tmp.write(data[half:])
                tmp.flush()
                os.fsync(tmp.fileno())
            # mkstemp makes the file owner-only; a checkpoint is readable like any file torch.save writes.
            os.chmod(tmp_name, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
            if self.keep_previous and path.exists():
                self._keep(path)
            os.replace(tmp_name, path)
        except BaseException as err:
            if os.path.exists(tmp_name):
                os.remove(tmp_name)
            full = self._disk_full(err, path, len(data)) if isinstance(err, OSError) else err
            if full is not err:
                raise full from err
            raise
        _fsync_dir(self.dirname)

    def _keep(self, path: Path) -> None:
        """Hard-link the file about to be replaced to ``keep_previous``: the old bytes stay, none are copied."""
        previous = Path(self.dirname) / str(self.keep_previous)
        link = Path(self.dirname) / f"{_tmp_prefix(previous.name)}{secrets.token_hex(6)}{_TMP_SUFFIX}"
        try:
            os.link(path, link)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            logger.warning("cannot keep %s as %s on this filesystem (%s): only the last checkpoint is kept",
                           path.name, previous.name, err.strerror)
            self.keep_previous = None
            return
        os.replace(link, previous)

    def _disk_full(self, err: OSError, path: Path, size: int) -> OSError:
        """A clear error for a full disk or quota (the folder, the bytes needed, what is intact); other errors as they are."""
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            return err
        free = shutil.disk_usage(self.dirname).free
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written yet"
        return CheckpointDiskFullError(
            err.errno,
            f"no space left in {self.dirname} to write {path.name}: {size} bytes needed, {free} bytes free "
            f"({os.strerror(err.errno)}); {kept} and no partial file is left. Free space there (or use another "
            "--bundle_root), then continue with --resume True",
        )

    def remove(self, filename: str) -> None:
        if self.filename is not None:
            return  # the fixed file is replaced by the next save, never deleted before it
        super().remove(filename)


class EpochCheckpointSaver:
    """Write ``save_dict``'s state dicts to one file (``checkpoint.pt``) after every ``save_interval`` epochs.

    Attach it to the trainer after the ``ValidationHandler`` (as ``initialize`` does), so each
    file holds the epoch's validation result and the RNG state after it.

    Args:
        save_dir: the checkpoint folder.
        save_dict: ``{name: object with state_dict()}``; the same names a ``CheckpointLoader`` loads.
        filename: the file, rewritten atomically each time.
        save_interval: epochs between saves.
        pause_mid_write: see :class:`AtomicDiskSaver` (tests only).
        keep_previous: keep the replaced file as ``checkpoint.previous.pt`` (see docs/faults.md for why).
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, Any],
        filename: str = CHECKPOINT_FILE,
        save_interval: int = 1,
        pause_mid_write: float = 0.0,
        keep_previous: bool = True,
    ) -> None:
        if not save_dict:
            raise ValueError("EpochCheckpointSaver needs a non-empty save_dict")
        for name, obj in save_dict.items():
            if not hasattr(obj, "state_dict"):
                raise TypeError(f"save_dict[{name!r}] ({type(obj).__name__}) has no state_dict()")
        self.save_dict = dict(save_dict)
        self.save_interval = int(save_interval)
        self.saver = AtomicDiskSaver(save_dir, filename=filename, pause_mid_write=pause_mid_write,
                                     keep_previous=PREVIOUS_CHECKPOINT_FILE if keep_previous else None)

    @property
    def path(self) -> Path:
        return self.saver.dirname / str(self.saver.filename)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)

    def __call__(self, engine: Engine) -> None:
        self.save()
        logger.info("epoch %d: saved %s", engine.state.epoch, self.path)

    def save(self) -> None:
        """Write the objects' current state now (also mid-epoch, for a run stopped by a signal)."""
        self.saver({name: _state_dict(obj) for name, obj in self.save_dict.items()})


class BestModelSaver:
    """Save the network to ``model.pt`` whenever the evaluator's key metric reaches a new best.

    "New best" is MONAI's own bookkeeping: the evaluator sets ``state.best_metric_epoch`` to the
    current epoch when the key metric improves (strictly, by default). That state is checkpointed
    (:class:`BestMetricState`), so after a resume a worse model never replaces ``model.pt``.
    Attach it to the evaluator (a ``val_handlers`` entry).
    """

    def __init__(self, save_dir: str | Path, network: nn.Module, filename: str = MODEL_FILE) -> None:
        self.network = network
        self.saver = AtomicDiskSaver(save_dir, filename=filename)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch != engine.state.epoch:
            return
        self.saver(_state_dict(self.network))
        logger.info(
            "epoch %d: new best %s %.4f, saved %s",
            engine.state.epoch, getattr(engine.state, "key_metric_name", "key metric"),
            float(engine.state.best_metric), self.saver.dirname / str(self.saver.filename),
        )


class BestMetricState:
    """The evaluator's best key metric and its epoch, as a checkpointable object.

    MONAI keeps them in ``evaluator.state`` (``best_metric``, ``best_metric_epoch``), which the
    engine's own ``state_dict`` leaves out; without them a resumed run would take its first
    validation as the best and overwrite ``model.pt`` with a worse model.
    """

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict[str, Any]:
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.evaluator.state.best_metric = float(state_dict["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])


class GradScalerState:
    """The trainer's AMP ``GradScaler`` (loss scale and growth tracker), as a checkpointable object.

    Without it a resumed AMP run restarts from the initial scale and skips optimizer steps until
    the scale has come down again. Without AMP (``trainer.scaler`` is None) it saves ``{}``.
    """

    def __init__(self, trainer: Engine) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        scaler = getattr(self.trainer, "scaler", None)
        return dict(scaler.state_dict()) if scaler is not None else {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        scaler = getattr(self.trainer, "scaler", None)
        if scaler is not None and state_dict:
            scaler.load_state_dict(dict(state_dict))
        elif scaler is not None or state_dict:
            logger.warning("resume: AMP was %s when the checkpoint was saved and is %s now; the loss scale restarts",
                           "on" if state_dict else "off", "on" if scaler is not None else "off")


class RunIdentity:
    """What makes a run that run (network, label sets, findings, strategy), as a checkpointable object.

    Saved in ``checkpoint.pt``; :func:`prepare_checkpoint_dir` compares it with the resuming run's
    before any data is read and refuses a change, naming the key. Settings that may change on
    resume (``epochs``, logging, workers) are not part of it. Values are strings, numbers, lists
    and dicts, so the file still loads with ``weights_only=True``.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = {key: _plain(value) for key, value in values.items()}

    def state_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.check(state_dict)

    def check(self, saved: Mapping[str, Any], source: str | Path = CHECKPOINT_FILE) -> None:
        """Raise ``ValueError`` naming every key whose value differs from ``saved`` (keys new on either side included)."""
        changed = [key for key in sorted(set(saved) | set(self.values)) if _plain(saved.get(key)) != self.values.get(key)]
        if changed:
            lines = "; ".join(f"{key}: {saved.get(key)!r} in the checkpoint, {self.values.get(key)!r} now" for key in changed)
            raise ValueError(
                f"--resume True: this run's {', '.join(changed)} differ{'s' if len(changed) == 1 else ''} from the run "
                f"saved in {source} ({lines}). A resumed run must train the same network on the same label sets, "
                "findings and strategy (only settings such as epochs may change): resume with the original values, "
                "or start a new run in another --bundle_root."
            )


def _plain(value: Any) -> Any:
    """Config values as JSON-like data (tuples become lists, classes their qualified names) so they compare and save."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, nn.Module):
        return _plain(type(value))
    return value


class RNGState:
    """Every random number stream a training run draws from, as a checkpointable object.

    Saves the global torch, CUDA, NumPy and Python RNG states, plus named ``torch.Generator``\\ s
    (e.g. the training DataLoader's shuffle generator) and every ``torch.Generator`` held as an
    attribute by a submodule of ``modules`` (e.g. a strategy's tie-breaking generator). Restored
    at the start of a resumed run, the following epochs draw the same numbers as an uninterrupted
    run would. All values are tensors, numbers or tuples, so the file loads with ``weights_only=True``.
    """

    def __init__(
        self, generators: Mapping[str, torch.Generator | None] | None = None, modules: Sequence[nn.Module] = ()
    ) -> None:
        self.generators = {name: g for name, g in (generators or {}).items() if g is not None}
        for index, module in enumerate(modules):
            for module_name, sub in module.named_modules():
                for attr, value in vars(sub).items():
                    if isinstance(value, torch.Generator):
                        self.generators[".".join(p for p in (f"module{index}", module_name, attr) if p)] = value

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        py_version, py_state, py_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {
                "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "cached_gaussian": float(np_state[4]),
            },
            "python": {"version": py_version, "state": tuple(py_state), "gauss_next": py_gauss},
            "generators": {name: g.get_state() for name, g in self.generators.items()},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"].cpu())
        cuda = list(state_dict.get("cuda", []))
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        np_state = state_dict["numpy"]
        np.random.set_state(
            ("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"],
             np_state["cached_gaussian"])
        )
        py = state_dict["python"]
        random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
        saved = state_dict.get("generators", {})
        missing = sorted(set(self.generators) - set(saved))
        if missing:
            # A config change between runs (another strategy, another sampler): say so, keep going.
            logger.warning("resume: no saved state for random generator(s) %s; they restart from their seed", missing)
        for name, generator in self.generators.items():
            if name in saved:
                generator.set_state(saved[name].cpu())


def _readable(path: Path) -> tuple[dict | None, str]:
    """``(checkpoint, "")`` when ``path`` loads with ``weights_only=True``, else ``(None, why)``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True), ""
    except Exception as err:  # noqa: BLE001 - any failure to read means the same thing to the user
        return None, f"{type(err).__name__}: {err}"


def _checkpoint_to_resume(folder: Path, checkpoint: Path) -> dict:
    """The checkpoint to resume from: ``checkpoint.pt``, or the kept previous one when it cannot be read.

    A damaged ``checkpoint.pt`` is moved aside to ``checkpoint.pt.damaged`` (kept for a look, never
    loaded) and the previous checkpoint takes its name, so the loader reads the usual path.
    """
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"--resume True: there is no {checkpoint} to resume from. Resume with the same --bundle_root "
            f"(or ckpt_dir) as the interrupted run, or start a new run without --resume."
        )
    state, why = _readable(checkpoint)
    if state is not None:
        return state
    previous = folder / PREVIOUS_CHECKPOINT_FILE
    kept, kept_why = _readable(previous) if previous.is_file() else (None, "not kept")
    if kept is None:
        raise RuntimeError(
            f"--resume True: {checkpoint} cannot be read ({why}), and there is no readable previous checkpoint "
            f"{previous} ({kept_why}). Start a new run with --overwrite True (or restore the file from a copy)."
        )
    if idist.get_rank() == 0:
        damaged = checkpoint.with_name(checkpoint.name + ".damaged")
        os.replace(checkpoint, damaged)
        os.link(previous, checkpoint)
        _fsync_dir(folder)
        logger.warning(
            "--resume True: %s cannot be read (%s); moved it to %s and resuming from the previous checkpoint %s "
            "(iteration %s): the work after it is done again", checkpoint, why, damaged.name, previous.name,
            kept.get("trainer", {}).get("iteration", "?"),
        )
    return kept


def prepare_checkpoint_dir(
    ckpt_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    files: Sequence[str] = (CHECKPOINT_FILE, MODEL_FILE, PREVIOUS_CHECKPOINT_FILE),
    identity: Mapping[str, Any] | RunIdentity | None = None,
    lock_file: str | Path | None = None,
) -> Path:
    """Start-up check of the checkpoint folder, before any data is read; returns the folder.

    * Refuses a folder another live run holds, naming its PID and host, and holds the folder's lock
      from then on (``lock_file``, default ``.training.lock`` beside ``ckpt_dir``; rank 0 only);
      a lock whose holder died is taken over (:mod:`l2v_monai.engine.run_lock`).
    * Removes temporary files of an interrupted write (``.<file>.*.tmp``).
    * ``resume``: ``checkpoint.pt`` must exist and load with ``weights_only=True``; when it cannot,
      the kept previous checkpoint replaces it (see :func:`_checkpoint_to_resume`); ``identity``
      (network, label sets, findings, strategy) must equal the saved one.
    * a new run: refuses a folder that holds ``files`` from an earlier run, naming ``--resume True``
      and ``--overwrite True``; with ``overwrite`` those files are deleted first, so a crash early
      in the new run cannot leave the old run's files looking like the new run's.
    """
    folder = Path(ckpt_dir)
    if resume and overwrite:
        raise ValueError("--resume True and --overwrite True contradict each other: choose one")
    writer = idist.get_rank() == 0
    lock = Path(lock_file) if lock_file is not None else folder.parent / LOCK_FILE
    if writer:
        # Before anything else, and without creating a file: a live run's folder is not touched.
        holder = lock_holder(lock)
        if holder is not None:
            acquire_run_lock(lock, what=str(folder))  # raises RunLockedError naming the holder
    existing = [name for name in files if (folder / name).exists()]
    if not resume and existing and not overwrite:
        raise FileExistsError(
            f"{folder} already holds {', '.join(existing)} from an earlier run. To continue that run add "
            f"--resume True; to start a new run that replaces them add --overwrite True (or choose another --bundle_root)."
        )
    if writer:
        acquire_run_lock(lock, what=str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            for tmp in folder.glob(f"{_tmp_prefix(name)}*{_TMP_SUFFIX}"):
                logger.warning("removing %s, left by an interrupted checkpoint write", tmp)
                tmp.unlink(missing_ok=True)
    checkpoint = folder / files[0]
    if resume:
        state = _checkpoint_to_resume(folder, checkpoint)
        if identity is not None:
            if not isinstance(identity, RunIdentity):
                identity = RunIdentity(identity)
            if "run_identity" in state:
                identity.check(state["run_identity"], checkpoint)
            else:
                logger.warning("resume: %s has no run identity (an older run); the config is not compared", checkpoint)
        logger.info("resuming from %s", checkpoint)
        return folder
    if existing and writer:
        for name in existing:
            (folder / name).unlink()
        logger.warning("--overwrite True: removed %s from %s", ", ".join(existing), folder)
    return folder


def promote_checkpoints(
    staging_dir: str | Path,
    ckpt_dir: str | Path,
    files: Sequence[str] = (CHECKPOINT_FILE, MODEL_FILE),
) -> Path:
    """Move a finished run's ``files`` from ``staging_dir`` over those of ``ckpt_dir``; returns ``ckpt_dir``.

    For a retrain beside a model that serves: the run writes into ``staging_dir`` (on the same file
    system, e.g. a folder inside ``ckpt_dir``), and only a run that wrote every file replaces the old
    ones, each with one atomic ``os.replace``. A run that failed or wrote no model leaves ``ckpt_dir``
    as it was (``FileNotFoundError`` names what is missing). ``model.pt`` goes last, so the file that
    serves changes only once the checkpoint beside it is new.
    """
    staging, folder = Path(staging_dir), Path(ckpt_dir)
    missing = [name for name in files if not (staging / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the run wrote no {', '.join(missing)} in {staging}; {folder} keeps its files")
    folder.mkdir(parents=True, exist_ok=True)
    order = sorted(files, key=lambda name: name == MODEL_FILE)
    for name in order:
        os.replace(staging / name, folder / name)
    _fsync_dir(folder)
    return folder
