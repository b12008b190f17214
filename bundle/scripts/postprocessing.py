"""After the network: keep the predictions of readable images, and list the unreadable ones.

``inference.json`` decodes with ``ChestXrayReader(mark_unreadable=True)`` (a file that cannot be
decoded becomes a blank stand-in whose metadata says why), and then:

* ``ClassificationSaver`` writes ``predictions.csv`` for the readable images only, through
  ``readable_meta`` / ``readable_preds``;
  With a thresholds file, each row also carries a 0/1 call per finding after the probabilities
  (``decisions.ThresholdCallsd``);
* ``UnreadableImageLog`` writes ``failures.csv`` (``image,reason``; just the header when every
  image was read) next to it, and ``raise_if_any()``, run after the evaluator, ends the process
  with ``UnreadableImagesError`` (exit status 1) naming the count and the file.

So one broken file costs its own prediction, never the whole run, and never silently. Needs
``pytorch-ignite`` (which MONAI's engines need anyway).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from .reader import UNREADABLE_META_KEY

logger = logging.getLogger(__name__)

FAILURES_HEADER = ("image", "reason")


class UnreadableImagesError(RuntimeError):
    """Some images could not be read; the others have predictions. Names the count and ``failures.csv``."""


def _unreadable_reason(item: Any) -> str:
    """The mark ``ChestXrayReader(mark_unreadable=True)`` left on a decollated item ("" when readable)."""
    image = item.get("image") if isinstance(item, Mapping) else None
    meta = getattr(image, "meta", None) or {}
    return str(meta.get(UNREADABLE_META_KEY, "") or "")


def readable_meta(batch: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``ClassificationSaver.batch_transform``: the image metadata of the readable items of a decollated batch."""
    return [item["image"].meta for item in batch if not _unreadable_reason(item)]


def readable_preds(output: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``ClassificationSaver.output_transform``: the predictions of the readable items of a decollated output.

    When ``ThresholdCallsd`` added ``calls`` (a thresholds file is saved with the bundle), each row
    holds the probabilities followed by one 0/1 call per finding (-1: that finding has no threshold).
    """
    import torch

    rows = []
    for item in output:
        if _unreadable_reason(item):
            continue
        pred = item["pred"]
        if item.get("calls") is not None:
            pred = torch.cat([torch.as_tensor(pred).flatten().float(), torch.as_tensor(item["calls"]).flatten().float().to(
                torch.as_tensor(pred).device)])
        rows.append(pred)
    return rows


class UnreadableImageLog:
    """Ignite handler: collect the unreadable images of an inference run and write ``failures.csv``.

    Attach it before ``ClassificationSaver``: when no image at all was readable it raises at the end
    of the run (there is nothing to save), otherwise call ``raise_if_any()`` after the run.
    """

    def __init__(self, output_dir: str | Path, filename: str = "failures.csv") -> None:
        self.path = Path(output_dir) / filename
        self.failures: list[tuple[str, str]] = []
        self.seen = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        # EPOCH_COMPLETED, like ClassificationSaver: attached before it, this runs first (see the class note).
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, _engine: Engine) -> None:
        self.failures, self.seen = [], 0

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        if isinstance(batch, Mapping):  # evaluator run with decollate=False
            raise TypeError("UnreadableImageLog needs the evaluator's default decollate=True")
        for item in batch:
            self.seen += 1
            reason = _unreadable_reason(item)
            if reason:
                self.failures.append((str(item["image"].meta.get("filename_or_obj")), reason))

    def _write(self, _engine: Engine) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with open(temporary, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(FAILURES_HEADER)
            writer.writerows(self.failures)
        os.replace(temporary, self.path)
        for image, reason in self.failures:
            logger.warning("unreadable, no prediction: %s (%s)", image, reason)
        if self.seen and len(self.failures) == self.seen:
            raise UnreadableImagesError(
                f"none of the {self.seen} images could be read; no predictions were written. "
                f"Each file and the reason are listed in {self.path}"
            )

    def raise_if_any(self) -> None:
        """After the run: raise ``UnreadableImagesError`` when any image was unreadable."""
        if self.failures:
            raise UnreadableImagesError(
                f"{len(self.failures)} of {self.seen} images could not be read and have no prediction; "
                f"each file and the reason are listed in {self.path}. "
                f"The other {self.seen - len(self.failures)} have their predictions."
            )


__all__ = [
    "FAILURES_HEADER",
    "UnreadableImageLog",
    "UnreadableImagesError",
    "readable_meta",
    "readable_preds",
]
