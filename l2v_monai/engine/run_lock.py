"""One training run per folder: an advisory lock that names its holder and is freed when the holder dies.

The lock is ``fcntl.flock`` on a small file beside ``models/`` (``.training.lock`` in the bundle
root). The kernel releases it when the holding process ends, however it ends (``kill -9``, a lost
node on a local disk), so a lock left by a killed run is never mistaken for a live one: the next
run finds the file unlocked, says whose it was, and takes it over. The file's content (PID, host,
start time) is only there to tell a refused run who holds the folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

__all__ = ["LOCK_FILE", "RunLockedError", "acquire_run_lock", "lock_holder"]

logger = logging.getLogger(__name__)

LOCK_FILE = ".training.lock"
# Locks this process holds, by resolved path: a second acquire in the same process (tests, notebooks)
# must not block on its own lock, and the file descriptor must stay open for the lock to last.
_HELD: dict[Path, int] = {}


class RunLockedError(RuntimeError):
    """Another live training run holds the folder."""


def _describe(info: dict) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if isinstance(started, (int, float)) else "?"
    return f"PID {info.get('pid', '?')} on host {info.get('host', '?')} (started {when})"


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        info = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def lock_holder(path: str | Path) -> dict | None:
    """The holder's ``{"pid", "host", "started"}`` when another process holds the lock at ``path``, else None.

    Read-only: a missing file is a free lock, and nothing is created.
    """
    path = Path(path)
    if path.resolve() in _HELD or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        except OSError:
            return None  # no locking on this filesystem: acquire_run_lock says so
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def acquire_run_lock(path: str | Path, what: str = "") -> Path:
    """Hold the lock at ``path`` until this process ends; raise :class:`RunLockedError` naming the live holder.

    ``what`` names the folder in the messages (defaults to the lock file's folder).
    """
    path = Path(path)
    key = path.resolve()
    if key in _HELD:
        return path
    what = what or str(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise RunLockedError(
            f"{what} is in use by another training run: {_describe(holder)}, which holds {path}. Wait for it to "
            "end or stop it, or give this run another --bundle_root."
        ) from None
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            logger.warning("%s: this filesystem has no file locks (%s); a second run in %s would not be refused",
                           path, err.strerror, what)
            return path
        raise
    previous = _read(fd)
    if previous and previous.get("pid") != os.getpid():
        logger.warning("taking over %s: the run that held it, %s, is no longer running", path, _describe(previous))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode("utf-8"))
    os.fsync(fd)
    _HELD[key] = fd  # never closed: the lock lasts as long as the process
    return path
