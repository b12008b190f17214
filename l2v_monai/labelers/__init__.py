"""Offline radiology-report labelers for the 14 CheXpert findings, and label sets from them.

Two labelers, built on different principles so that they disagree the way CheXpert and NegBio do:

* ``context`` (``context.py``): medspaCy target rules + ConText, sentence scope, broad mention
  lists. Needs the ``[reports]`` extra (``pip install 'l2v-monai[reports]'``).
* ``window`` (``window.py``): narrow regular-expression mentions + NegEx-style triggers with a
  token window. Pure Python.

Each gives, per finding, one ``Assertion``: positive, negative, uncertain or not mentioned
(``assertion.py``, which also holds CheXpert's No Finding rule). ``label_sets`` turns reports into
the ``S × (2·L) × 14`` label array that the vote trains from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from l2v_monai.extras import MissingExtraError, install_hint
from l2v_monai.findings import CHEXPERT_FINDINGS
from l2v_monai.labelers.assertion import Assertion, assertions_to_labels

__all__ = [
    "Assertion",
    "LABELERS",
    "Labeler",
    "MissingLabelerExtraError",
    "get_labeler",
    "label_sets",
    "label_set_names",
]

# What a not-mentioned finding becomes in ``label_sets``: 0, as the MIMIC-CXR path
# (``l2v_monai.data.mimic``, ``blank=0.0``) maps CheXpert's blank cells by default.
NOT_MENTIONED_VALUE = 0.0
# Uncertain → 0 for ``<name>_u0``, → 1 for ``<name>_u1``.
UNCERTAIN_MAPPINGS: tuple[tuple[str, float], ...] = (("u0", 0.0), ("u1", 1.0))


class Labeler(Protocol):
    """A report labeler: cleaned report text → 14 ``Assertion`` s in ``CHEXPERT_FINDINGS`` order."""

    name: str

    def label(self, text: str) -> tuple[Assertion, ...]: ...

    def label_many(self, texts: Iterable[str]) -> list[tuple[Assertion, ...]]: ...


class MissingLabelerExtraError(MissingExtraError):
    """A labeler needs the optional ``[reports]`` extra (medspacy), which is not installed."""


def missing_extra(labeler: str, error: ImportError) -> MissingLabelerExtraError:
    """The error raised when ``labeler`` cannot import its optional dependency."""
    return MissingLabelerExtraError(
        f"the {labeler!r} report labeler needs the optional package {error.name or str(error)!r}, part of the "
        f"'reports' extra (formerly 'labelers'): {install_hint('reports')}"
    )


def _context() -> Labeler:
    from l2v_monai.labelers.context import ConTextLabeler

    return ConTextLabeler()


def _window() -> Labeler:
    from l2v_monai.labelers.window import WindowLabeler

    return WindowLabeler()


# Name → factory. Factories import lazily, so that `import l2v_monai.labelers` works without medspacy.
LABELERS: dict[str, Callable[[], Labeler]] = {"context": _context, "window": _window}


@functools.lru_cache(maxsize=None)
def get_labeler(name: str) -> Labeler:
    """The labeler called ``name``, built once per process (a medspaCy pipeline takes seconds to build)."""
    if name not in LABELERS:
        raise KeyError(f"unknown labeler {name!r}; choose from {sorted(LABELERS)}")
    return LABELERS[name]()


def label_set_names(labelers: Sequence[str] = tuple(LABELERS)) -> list[str]:
    """``["<a>_u0", "<a>_u1", "<b>_u0", "<b>_u1"]`` for labelers ``a, b``."""
    return [f"{name}_{suffix}" for name in labelers for suffix, _ in UNCERTAIN_MAPPINGS]


def label_sets(
    texts: Sequence[str],
    labelers: Sequence[str] = tuple(LABELERS),
    progress: bool = False,
    not_mentioned: float = NOT_MENTIONED_VALUE,
) -> tuple[np.ndarray, list[str]]:
    """Reports → float32 label sets ``S × (2·L) × 14`` (``CHEXPERT_FINDINGS`` order) and their names.

    Per labeler two sets: ``<name>_u0`` (uncertain → 0) and ``<name>_u1`` (uncertain → 1). Positive
    is 1, negative 0, and **not mentioned is 0**, as the MIMIC-CXR path maps CheXpert blanks by
    default (``not_mentioned=float("nan")`` keeps it missing instead). No Finding follows CheXpert's rule (``assertion.py``). ``texts`` are cleaned report
    text (FINDINGS + IMPRESSION, see ``l2v_monai.data.report_text``); an empty text has every finding not
    mentioned, so No Finding = 1. ``progress`` shows a tqdm bar on stderr (never report text).
    """
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"report {index} is {type(text).__name__}, not str")
    labelers = list(labelers)
    blocks = []
    for name in labelers:
        labeler = get_labeler(name)
        states = labeler.label_many(_progress(texts, progress, name))
        for _, uncertain in UNCERTAIN_MAPPINGS:
            blocks.append(assertions_to_labels(states, uncertain, not_mentioned))
    if not blocks:
        raise ValueError("no labeler given")
    array = np.stack(blocks, axis=1) if texts else np.zeros((0, len(blocks), len(CHEXPERT_FINDINGS)), np.float32)
    return array.astype(np.float32, copy=False), label_set_names(labelers)


def _progress(texts: list[str], show: bool, name: str):
    if not show:
        return texts
    from tqdm.auto import tqdm

    return tqdm(texts, desc=f"labeling ({name})", unit="report", leave=False)
