"""Optional dependencies: import one, or say which pip extra installs it.

The core (``pip install l2v-monai``) trains, validates and prepares datalists. What only some users
need lives in extras, imported where it is used so that ``import l2v_monai.<module>`` never needs it:

* ``[reports]``: transformers (report embedding), medspaCy + loguru (the ``context`` report labeler);
* ``[baselines]``: crowd-kit (Dawid–Skene: the baseline strategy, the label-set quality report, the relabeling queue);
* ``[eval]``: matplotlib (ROC plots, heatmaps) and pandas (AUC tables);
* ``[test]``: everything the test suite needs, the extras above included.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "import_extra", "install_hint"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def install_hint(extra: str) -> str:
    """``pip install 'l2v-monai[eval]' (or pip install -e '.[eval]' in a checkout)``."""
    return f"pip install 'l2v-monai[{extra}]' (or pip install -e '.[{extra}]' in a checkout)"


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``, or a ``MissingExtraError`` naming ``purpose`` and ``extra``.

    ``purpose`` says what needed the module, e.g. ``"ROC plots (plot_roc_curves)"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        # The missing package may be a dependency of ``module``: name what was actually missing.
        missing = error.name or module.split(".")[0]
        raise MissingExtraError(
            f"{purpose} needs the optional package {missing!r}, part of the '{extra}' extra: {install_hint(extra)}"
        ) from None
