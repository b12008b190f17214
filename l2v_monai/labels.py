"""The label-set contract: how several noisy label sets for the same images are held.

Every loader, strategy and metric speaks one shape:

* **label sets** (item key ``labels``): ``M × N`` per item (label sets × findings), ``B × M × N`` in a
  batch, float, with NaN where a set gives no label. Multi-class data uses one-hot ``M × K``.
* **hand labels** (item key ``label``): ``N`` per item, the clean label a person gave, NaN where none.

This module parses and stacks them (naming the bad item in every error), and holds the two
aggregates everything else is measured against: majority vote, and the deterministic noisy target
that validation scores against when no hand labels exist. It imports nothing else of ours.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: The item key of the noisy label sets (``M × N``) and of the hand labels (``N``).
LABEL_SETS_KEY = "labels"
HAND_LABELS_KEY = "label"
#: How many bad items an error lists before "... and N more".
MAX_LISTED_ITEMS = 5
_NUMBER_TYPES = (int, float, np.integer, np.floating)


class LabelValueError(ValueError):
    """One item's ``labels`` / ``label`` value is missing or malformed; names the item."""


def describe_item(split: str, index: int, item: Any, image_key: str = "image") -> str:
    """``training[12] (image /data/p1/s2/x.jpg)``: how messages name an item (never by report text)."""
    image = item.get(image_key) if isinstance(item, Mapping) else None
    if isinstance(image, (str, os.PathLike)):
        return f"{split}[{index}] (image {os.fspath(image)})"
    return f"{split}[{index}]"


def _value_text(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def label_problem(value: Any, shape: Sequence[int | None], names: Sequence[Sequence[str]] | None = None) -> str | None:
    """Why ``value`` is not a label array of ``shape`` with values in [0, 1] or null; None when it is."""
    if value is None:
        return "is null"
    if isinstance(value, (np.ndarray, torch.Tensor)):
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        if not np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
            return f"has dtype {array.dtype}, expected numbers"
        got: tuple[int, ...] = tuple(array.shape)
        flat_values: list[Any] = array.astype(np.float64).ravel().tolist()
    else:
        got_shape = _list_shape(value, len(shape))
        if isinstance(got_shape, str):
            return got_shape
        got = got_shape
        flat_values = _flatten(value, len(shape))
    if len(got) != len(shape) or any(want is not None and have != want for have, want in zip(got, shape)):
        expected = " × ".join("?" if s is None else str(s) for s in shape)
        return f"has shape {' × '.join(map(str, got))}, expected {expected}{_shape_meaning(shape)}"
    for flat_index, element in enumerate(flat_values):
        if element is None:
            continue
        position = _position(flat_index, got, names)
        if isinstance(element, bool) or not isinstance(element, _NUMBER_TYPES):
            return f"value {_value_text(element)} at {position} is not a number (use 0, 1 or null)"
        number = float(element)
        if math.isnan(number):
            continue
        if not 0.0 <= number <= 1.0:
            hint = " (an uncertain CheXpert label not mapped to 0/1?)" if number == -1.0 else ""
            return f"value {number:g} at {position} is outside [0, 1]{hint}"
    return None


def _shape_meaning(shape: Sequence[int | None]) -> str:
    return " (label sets × findings)" if len(shape) == 2 else " (findings)"


def _list_shape(value: Any, ndim: int) -> tuple[int, ...] | str:
    """Shape of a rectangular nested list of depth ``ndim``, or why it is not one."""
    if not isinstance(value, (list, tuple)):
        return f"is a {type(value).__name__} ({_value_text(value)}), expected a list"
    if ndim == 1:
        for element in value:
            if isinstance(element, (list, tuple)):
                return "is nested one level too deep (expected a flat list)"
        return (len(value),)
    rows = []
    for row in value:
        inner = _list_shape(row, ndim - 1)
        if isinstance(inner, str):
            return f"row {len(rows)} {inner}"
        rows.append(inner)
    if len(set(rows)) > 1:
        return f"has rows of different lengths {sorted({r[0] for r in rows})}"
    return (len(value), *(rows[0] if rows else (0,) * (ndim - 1)))


def _flatten(value: Any, ndim: int) -> list[Any]:
    return list(value) if ndim == 1 else [x for row in value for x in _flatten(row, ndim - 1)]


def _position(flat_index: int, shape: Sequence[int], names: Sequence[Sequence[str]] | None) -> str:
    index = np.unravel_index(flat_index, tuple(shape)) if shape else ()
    if names is not None and len(names) == len(index):
        parts = [axis[i] if i < len(axis) else str(i) for axis, i in zip(names, index)]
        return "/".join(str(p) for p in parts)
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def label_array(
    item: Any,
    where: str,
    key: str = "labels",
    shape: Sequence[int | None] = (None, None),
    names: Sequence[Sequence[str]] | None = None,
) -> np.ndarray:
    """``item[key]`` as float32 (null → NaN), checked against ``shape``; raise ``LabelValueError`` naming ``where``.

    ``shape`` entries of ``None`` accept any length; ``names`` (label set and finding names)
    make a bad value's position readable (``che_u1/Edema`` rather than ``[3, 3]``).
    """
    if not isinstance(item, Mapping):
        raise LabelValueError(f"{where}: is a {type(item).__name__}, expected a mapping with {key!r}")
    if key not in item:
        raise LabelValueError(f"{where}: has no {key!r} key")
    problem = label_problem(item[key], shape, names)
    if problem is not None:
        raise LabelValueError(f"{where}: {key!r} {problem}")
    value = item[key]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.astype(np.float32)
    return np.array(value, dtype=np.float32)  # None → NaN


def well_formed_labels(values: list[Any], shape: Sequence[int | None]) -> np.ndarray | None:
    """All label values of a split as one float32 array when every one is well formed, else None.

    The common case (a datalist written by the prepare scripts, or arrays made in code) is decided
    in a few C-speed passes; anything else sends the caller to the per-item check, which names the
    offending items.
    """
    if not values:
        return None
    if all(isinstance(value, (np.ndarray, torch.Tensor)) for value in values):
        arrays = [np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v) for v in values]
        if any(not np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_ for a in arrays):
            return None
        try:
            array = np.stack(arrays).astype(np.float32)
        except ValueError:
            return None
    else:
        # Lengths per level, then the flat values and their types, all at C speed (chain/map/len):
        # numpy's own nested-list conversion is several times slower at MIMIC scale.
        try:
            level: list[Any] = list(values)
            found_shape: list[int] = []
            for _ in shape:
                lengths = set(map(len, level))
                if len(lengths) != 1:
                    return None
                found_shape.append(lengths.pop())
                level = list(chain.from_iterable(level))
        except TypeError:  # a null or a number where a list should be: the per-item check names it
            return None
        if not set(map(type, level)) <= {int, float, type(None)}:  # a bool, a string, a list nested deeper
            return None
        flat = np.fromiter(level, dtype=object, count=len(level))
        flat[np.equal(flat, None)] = np.nan  # null → NaN; numpy's own None conversion is twice as slow
        array = flat.astype(np.float32).reshape(len(values), *found_shape)
    if array.ndim != 1 + len(shape) or any(want is not None and got != want for got, want in zip(array.shape[1:], shape)):
        return None
    known = array[~np.isnan(array)]
    if ((known < 0) | (known > 1)).any():
        return None
    return array


def stack_labels(
    items: Sequence[Any],
    key: str = "labels",
    shape: Sequence[int | None] = (None, None),
    names: Sequence[Sequence[str]] | None = None,
    split: str = "training",
) -> np.ndarray:
    """Every item's ``key`` stacked as float32 ``S × shape`` (null → NaN).

    Raises ``LabelValueError`` listing every bad item (capped), each named by split, index and
    image, for a missing or null value, a non-number (``"yes"``), a value outside [0, 1] or a
    shape other than ``shape`` (``None`` entries accept any length, but all items must agree).
    """
    if all(isinstance(item, Mapping) and key in item for item in items):
        fast = well_formed_labels([item[key] for item in items], shape)
        if fast is not None:
            return fast
    problems: list[str] = []
    arrays: list[np.ndarray] = []
    for index, item in enumerate(items):
        try:
            arrays.append(label_array(item, describe_item(split, index, item), key, shape, names))
        except LabelValueError as error:
            problems.append(str(error))
    if not problems and len({a.shape for a in arrays}) > 1:
        first = arrays[0].shape
        problems = [
            f"{describe_item(split, index, items[index])}: {key!r} has shape {' × '.join(map(str, a.shape))}, "
            f"but {describe_item(split, 0, items[0])} has {' × '.join(map(str, first))}"
            for index, a in enumerate(arrays) if a.shape != first
        ]
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED_ITEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_ITEMS} more" if len(problems) > MAX_LISTED_ITEMS else ""
        raise LabelValueError(f"{len(problems)} of {len(items)} {split} items have a bad {key!r}:\n  {listed}{more}")
    return np.stack(arrays) if arrays else np.zeros((0, *(s or 0 for s in shape)), dtype=np.float32)


def stack_hand_labels(items: Sequence[Any], num_findings: int, key: str = "label", split: str = "training") -> np.ndarray:
    """The items' hand labels (``key``, ``N`` values, null = none) as float32 ``S × N``, NaN where an item has none.

    An item without the key, or with ``null``, has no hand label. A malformed one (a shape other
    than ``N``, a value outside [0, 1]) is a ``LabelValueError`` naming the item by split, index and image.
    """
    blank = [None] * num_findings
    # Only the image travels along, so that an error names the item and nothing else of it.
    filled = [{"image": it.get("image") if isinstance(it.get("image"), str) else None,
               key: it[key] if it.get(key) is not None else blank} for it in items]
    return stack_labels(filled, key, (num_findings,), split=split)


def split_labels(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(values, mask)``: NaN replaced by 0, and a float mask that is 1 where a label exists."""
    mask = (~torch.isnan(labels)).to(labels.dtype)
    return torch.nan_to_num(labels, nan=0.0), mask


#: Tie rules of :func:`majority_vote`: a fresh coin per call, ties → 1 (multi-label only), or NaN.
MAJORITY_TIES = ("random", "positive", "one", "nan")


def _one_hot_argmax(scores: torch.Tensor, valid: torch.Tensor, generator: torch.Generator | None, ties: str) -> torch.Tensor:
    """One-hot of the row-wise argmax; ties broken at random (``ties="random"``) or left NaN; rows with no votes are NaN."""
    top = scores.max(dim=1, keepdim=True).values
    tied = (scores == top).float()
    noise = torch.rand(scores.shape, generator=generator, device="cpu").to(scores.device)
    pick = (tied * (noise + 1.0)).argmax(dim=1)
    out = F.one_hot(pick, scores.shape[1]).to(scores.dtype)
    keep = valid > 0
    if ties == "nan":
        keep = keep & (tied.sum(dim=1) == 1)
    return torch.where(keep.unsqueeze(1), out, torch.full_like(out, float("nan")))


def check_ties(ties: str, multiclass: bool) -> None:
    if ties not in MAJORITY_TIES:
        raise ValueError(f"ties must be one of {MAJORITY_TIES}, got {ties!r}")
    if multiclass and ties in ("positive", "one"):
        raise ValueError(f"ties={ties!r} (ties → 1) is for multi-label sets; one-hot classes have no positive side")


def majority_vote(
    labels: torch.Tensor, multiclass: bool, generator: torch.Generator | None = None, ties: str = "random"
) -> torch.Tensor:
    """Majority vote over label sets (``B × M × N`` → ``B × N``); NaN where no set votes.

    Multi-class: the class with most votes. Multi-label: per finding, 1 if more sets say 1 than 0.
    Ties are broken uniformly at random (``ties="random"``, the paper's MV), set to 1
    (``"positive"`` or its alias ``"one"``, multi-label only: a finding that half the sets report
    is ranked above the clear negatives) or left NaN (``"nan"``, for deterministic evaluation).
    """
    check_ties(ties, multiclass)
    values, mask = split_labels(labels)
    if multiclass:
        counts = (values * mask).sum(dim=1)
        valid = (mask.sum(dim=(1, 2)) > 0).to(values.dtype)
        return _one_hot_argmax(counts, valid, generator, ties)
    pos = (values * mask).sum(dim=1)
    neg = ((1 - values) * mask).sum(dim=1)
    if ties == "random":
        tie = (torch.rand(pos.shape, generator=generator, device="cpu").to(pos.device) < 0.5).to(pos.dtype)
    elif ties == "nan":
        tie = torch.full_like(pos, float("nan"))
    else:
        tie = torch.ones_like(pos)
    out = torch.where(pos > neg, 1.0, torch.where(neg > pos, 0.0, tie))
    return torch.where(mask.sum(dim=1) > 0, out, torch.full_like(out, float("nan")))


NOISY_TARGETS = ("majority", "mean")


def noisy_target(labels: torch.Tensor, target: str, multiclass: bool = False) -> torch.Tensor:
    """A deterministic per-item label from noisy sets (``B × M × N`` → ``B × N``), for evaluation.

    ``"majority"``: :func:`majority_vote` with ties left NaN, so only items with a majority are
    scored; ``"mean"``: the mean of the available sets. Used by the evaluator's batch preparation
    and by the start-up check that asks whether validation can be scored at all.
    """
    if target == "mean":
        return torch.nanmean(labels, dim=1)
    if target == "majority":
        return majority_vote(labels, multiclass, ties="nan")
    raise ValueError(f"unknown noisy evaluation target {target!r}; choose one of {NOISY_TARGETS}")


__all__ = [
    "HAND_LABELS_KEY",
    "LABEL_SETS_KEY",
    "LabelValueError",
    "MAJORITY_TIES",
    "NOISY_TARGETS",
    "check_ties",
    "describe_item",
    "label_array",
    "label_problem",
    "majority_vote",
    "noisy_target",
    "split_labels",
    "stack_hand_labels",
    "stack_labels",
    "well_formed_labels",
]
