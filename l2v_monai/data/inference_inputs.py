"""Inference inputs and the unreadable-image handling, re-exported from the bundle's own ``scripts/``.

Their home is ``bundle/scripts/inputs.py`` and ``bundle/scripts/postprocessing.py`` (installed as
``l2v_monai.bundle_scripts``), so that ``inference.json`` needs only the bundle folder; this module
keeps the library's import path.
"""

from __future__ import annotations

from l2v_monai.bundle_scripts.inputs import NoInputImagesError, inference_items
from l2v_monai.bundle_scripts.postprocessing import (
    FAILURES_HEADER,
    UnreadableImageLog,
    UnreadableImagesError,
    readable_meta,
    readable_preds,
)
from l2v_monai.bundle_scripts.reader import IMAGE_SUFFIXES

__all__ = [
    "FAILURES_HEADER",
    "IMAGE_SUFFIXES",
    "NoInputImagesError",
    "UnreadableImageLog",
    "UnreadableImagesError",
    "inference_items",
    "readable_meta",
    "readable_preds",
]
