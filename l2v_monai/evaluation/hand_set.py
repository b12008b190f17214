"""Which predictions belong to which hand-labelled item? Reading a predictions CSV against a datalist split.

``predictions.csv`` (what ``inference.json`` writes) holds the image path, then one probability
per finding, then, when thresholds were saved with the bundle, one 0/1 call per finding. Rows are
matched to the datalist's items by resolved image path; an item without a prediction, or a
prediction for an image that is not in the split, is an error listing them. A finding that has
no positive among the labelled items is reported by :func:`check_positives`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.data.datalist import read_datalist

__all__ = ["HandSet", "read_hand_set", "read_predictions", "match_predictions", "patient_ids", "PATIENT_KEYS"]

# The first of these keys that every item carries is the patient id (MIMIC datalists: subject_id).
PATIENT_KEYS = ("patient_id", "subject_id")


@dataclass
class HandSet:
    """A datalist split's hand-labelled items: ``labels`` is ``B × N`` (NaN = not labelled)."""

    path: Path
    split: str
    findings: list[str]
    items: list[dict[str, Any]]
    labels: np.ndarray
    keys: list[str] = field(default_factory=list)  # resolved image paths, the match key


def read_hand_set(path: str | Path, split: str = "test") -> HandSet:
    """The ``split`` of a hand-labelled datalist; every item needs a ``label`` of one value per finding."""
    path = Path(path)
    data = read_datalist(path, splits=[split], require=[split])
    findings, items = data["findings"], data[split]
    rows = []
    for index, item in enumerate(items):
        label = item.get("label")
        if not isinstance(label, list) or len(label) != len(findings):
            raise ValueError(f"{path} [{split}]: item {index} ({item.get('image', '?')}) needs a 'label' list of "
                             f"{len(findings)} values (1, 0 or null), one per finding")
        rows.append([np.nan if v is None else v for v in label])
    labels = np.asarray(rows, dtype=np.float64)
    return HandSet(path, split, list(findings), items, labels, [str(Path(it["image"]).resolve()) for it in items])


def read_predictions(path: str | Path, num_findings: int) -> dict[str, np.ndarray]:
    """``{image path: probabilities}`` from a predictions CSV; bad rows are errors naming the line.

    A row may also carry one call per finding after the probabilities (thresholds saved with the bundle).
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or (line == 1 and row[0].strip().lower() in ("filename", "image")):
                continue
            if len(row) not in (1 + num_findings, 1 + 2 * num_findings):
                raise ValueError(f"{path}, line {line}: expected an image path and {num_findings} probabilities "
                                 f"(and optionally {num_findings} calls), got {len(row)} cells")
            try:
                values = np.array([float(x) for x in row[1:1 + num_findings]], dtype=np.float64)
            except ValueError as err:
                raise ValueError(f"{path}, line {line}: {err}") from err
            key = str(Path(row[0]).resolve())
            if key in out:
                raise ValueError(f"{path}, line {line}: a second prediction for {row[0]}")
            out[key] = values
    return out


def match_predictions(predictions: Mapping[str, np.ndarray], hand: HandSet, source: str | Path) -> np.ndarray:
    """The ``B × N`` probabilities in the hand set's item order; a mismatch lists the items on each side."""
    missing = [k for k in hand.keys if k not in predictions]
    extra = sorted(set(predictions) - set(hand.keys))
    if missing or extra:
        raise ValueError(
            f"{source} does not match {hand.path} [{hand.split}]: {len(missing)} labelled images without a prediction"
            f"{' (' + ', '.join(missing[:5]) + (', ...' if len(missing) > 5 else '') + ')' if missing else ''}, "
            f"{len(extra)} predictions for images not in the datalist"
            f"{' (' + ', '.join(extra[:5]) + (', ...' if len(extra) > 5 else '') + ')' if extra else ''}"
        )
    return np.stack([predictions[k] for k in hand.keys])


def patient_ids(items: Sequence[Mapping[str, Any]], key: str | None = None) -> tuple[str | None, list[str] | None]:
    """``(key, one id per item)``: ``key`` if given (every item must carry it), else the first of ``PATIENT_KEYS`` all items carry."""
    if key is not None:
        lacking = [i for i, it in enumerate(items) if it.get(key) in (None, "")]
        if lacking:
            raise ValueError(f"items {lacking[:5]} ({len(lacking)} in total) have no {key!r}, the patient id asked for")
        return key, [str(it[key]) for it in items]
    for candidate in PATIENT_KEYS:
        if items and all(it.get(candidate) not in (None, "") for it in items):
            return candidate, [str(it[candidate]) for it in items]
    return None, None


def check_positives(hand: HandSet, required: Sequence[str] = ()) -> None:
    """A finding named in ``required`` without positives (or negatives) among the labelled items is an error naming it."""
    for finding in required:
        if finding not in hand.findings:
            raise ValueError(f"{hand.path}: finding {finding!r} is not one of its findings {hand.findings}")
        column = hand.labels[:, hand.findings.index(finding)]
        positives, negatives = int(np.nansum(column == 1)), int(np.nansum(column == 0))
        if positives == 0 or negatives == 0:
            raise ValueError(f"{hand.path} [{hand.split}]: {finding!r} has {positives} positive(s) and {negatives} negative(s) "
                             "among the hand-labelled items; it needs both to be evaluated")
