"""The last lines a user sees when a bundle run fails: the error that stopped it, not MONAI's wrapper.

``monai.bundle`` re-raises every error of a ``_target_`` component as ``RuntimeError: Failed to
instantiate component ...`` and every error of a ``$`` expression as ``RuntimeError: Failed to
evaluate ...`` (chained ``from`` the original). Python prints the original first and the wrapper
last, so a user's last line would say which config key failed but not why; the clear message
(``CacheBuildError`` with every bad file, ``DatalistCheckError`` with every bad item) would sit
pages up, above MONAI's and ignite's frames.

``show_cause_last()``, the first entry of each config's ``initialize``, installs a
``sys.excepthook`` that prints the usual traceback unchanged and then the original error once
more, so that it is what the terminal ends with. Nothing is caught or hidden, the exit status
stays 1, and errors that MONAI did not wrap print exactly as before.
"""

from __future__ import annotations

import sys
import traceback
from types import TracebackType

# The two messages with which monai.bundle wraps errors (monai.utils.module.instantiate, ConfigExpression.evaluate).
MONAI_WRAPPER_PREFIXES = ("Failed to instantiate component", "Failed to evaluate")


def root_cause(error: BaseException) -> BaseException:
    """The error under ``monai.bundle``'s ``RuntimeError`` wrappers (``error`` itself when not wrapped)."""
    while (
        type(error) is RuntimeError
        and str(error).startswith(MONAI_WRAPPER_PREFIXES)
        and error.__cause__ is not None
    ):
        error = error.__cause__
    return error


def cause_last_text(error: BaseException) -> str:
    """The lines printed after the traceback: empty when ``error`` is not a MONAI wrapper."""
    cause = root_cause(error)
    if cause is error:
        return ""
    text = "".join(traceback.format_exception_only(type(cause), cause))
    return "\nThe run stopped because of this error:\n" + text + ("" if text.endswith("\n") else "\n")


def _chained(previous: object) -> object:
    def excepthook(exc_type: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        previous(exc_type, error, tb)  # type: ignore[operator]
        text = cause_last_text(error)
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()

    excepthook.l2v_cause_last = True  # type: ignore[attr-defined]
    return excepthook


def show_cause_last() -> None:
    """Install the hook for this process, after whatever hook is already there; idempotent."""
    if not getattr(sys.excepthook, "l2v_cause_last", False):
        sys.excepthook = _chained(sys.excepthook)  # type: ignore[assignment]


__all__ = ["MONAI_WRAPPER_PREFIXES", "cause_last_text", "root_cause", "show_cause_last"]
