"""Which training images should a radiologist hand-label first? Rank them, then export the queue.

A hand label is worth most where the label the model trains toward is likely wrong *and* the
model cannot fix it alone. Each score gives a number per (image, finding), higher = more worth a
hand label, and an image's score aggregates its findings (:data:`AGGREGATES`). The queue offers three
(:data:`METHODS`):

* ``contested_expected_error`` (the default): on the entries where the label sets disagree, the
  chance that the training target (the vote's decision, else Dawid–Skene's) is wrong under the mean
  of every probability at hand (Dawid–Skene's posterior, the vote's ``ȳ``, the model); 0 on unanimous
  entries (a unanimous label is wrong only when every labeler errs alike, which no score here can see);
* ``calibrated_error``: the same error, calibrated on the hand labels already given (a random
  audit): each stratum (finding × the target's value × contested or not) gets its measured error
  rate, so that errors every set makes alike become visible (:func:`calibrated_error`);
* ``disagreement``: how evenly the label sets split, ``1 − |2·mean − 1|``; it needs no trained run.

Other candidates (entropies, ActiveLab, ...) were measured in simulated rounds and are research
(``l2v_monai.experiments.relabel_scores``). On our testbeds a random sample of the same size gained
as much test AUC per hand label as the queue (``docs/relabel.md``), so the command offers both.

Entries that already carry a hand label score 0. :data:`QUEUE_METHOD` is the combination that
:func:`queue_scores` uses by default; it was chosen on development seeds (``docs/relabel.md``).

Export (:func:`write_queue`): ``queue.csv`` (rank, id, study, the score, the disagreeing findings,
each set's label and the vote's refined label per finding), a blank ``hand_labels.csv`` (``id`` and
one column per finding; :mod:`l2v_monai.quality.hand_labels` reads it back) and ``contact_sheet.png``
(thumbnails captioned with the rank and the disagreeing findings; no identifiers, no report text).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.strategies.dawid_skene import binarize, fit_binary

__all__ = [
    "AGGREGATES",
    "METHODS",
    "QUEUE_AGGREGATE",
    "QUEUE_METHOD",
    "QueueEvidence",
    "calibrated_error",
    "contact_sheet",
    "disagreement_scores",
    "expected_error",
    "disagreeing_findings",
    "finding_scores",
    "image_scores",
    "item_id",
    "queue_rows",
    "source_image",
    "queue_scores",
    "top_n",
    "write_queue",
    "with_hand",
    "write_template",
]

#: How an image's findings become one score: the sum (expected hand-label value over its findings),
#: the largest, or the mean over the findings that have a score.
AGGREGATES = ("sum", "max", "mean")

#: The combination the queue uses (chosen on development seeds; see docs/relabel.md).
QUEUE_METHOD = "contested_expected_error"
QUEUE_AGGREGATE = "sum"


@dataclass(frozen=True)
class QueueEvidence:
    """What the ranking can look at, for ``S`` training items × ``N`` findings.

    ``labels`` ``S × M × N`` (NaN = no label; soft labels are cut at 0.5), ``ds_posterior``
    Dawid–Skene's ``P(y = 1)``, ``vote`` the vote's soft refined label ``ȳ``, ``model`` the trained
    model's probability and ``hand`` the hand labels already given (NaN = none), each ``S × N`` or None.
    """

    labels: np.ndarray
    ds_posterior: np.ndarray | None = None
    vote: np.ndarray | None = None
    model: np.ndarray | None = None
    hand: np.ndarray | None = None

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels, dtype=np.float64)
        if labels.ndim != 3:
            raise ValueError(f"labels must be items × sets × findings, got shape {labels.shape}")
        object.__setattr__(self, "labels", binarize(labels))
        shape = (labels.shape[0], labels.shape[2])
        for name in ("ds_posterior", "vote", "model", "hand"):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"{name} has shape {value.shape}, expected {shape[0]} items × {shape[1]} findings")
            object.__setattr__(self, name, value)

    @classmethod
    def from_labels(cls, labels: np.ndarray, **parts: Any) -> QueueEvidence:
        """Evidence with Dawid–Skene's posterior fitted on ``labels`` (crowd-kit) unless ``ds_posterior`` is given."""
        if parts.get("ds_posterior") is None:
            parts["ds_posterior"] = fit_binary(labels).posterior
        return cls(labels, **parts)

    def need(self, name: str, method: str) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"score {method!r} needs the {name.replace('_', ' ')} (S × N); it was not given")
        return value


def disagreement_scores(labels: np.ndarray) -> np.ndarray:
    """``1 − |2·mean − 1|`` over the sets that label each entry (``S × M × N`` → ``S × N``); 0 with fewer than two sets."""
    labels = np.asarray(labels, dtype=np.float64)
    known = ~np.isnan(labels)
    count = known.sum(1)
    with np.errstate(invalid="ignore"):
        mean = np.nansum(labels, 1) / np.maximum(count, 1)
    return np.where(count >= 2, 1.0 - np.abs(2.0 * mean - 1.0), 0.0)


def _decision(ev: QueueEvidence, method: str) -> np.ndarray:
    """The training target the score asks about: the vote's decision, else Dawid–Skene's."""
    source = ev.vote if ev.vote is not None else ev.need("ds_posterior", method)
    return binarize(source)


def expected_error(ev: QueueEvidence, method: str = "expected_error") -> np.ndarray:
    """``|target − q|``: the chance that the training target (the vote's decision, else Dawid–Skene's) is wrong under
    ``q``, the mean of every probability at hand (Dawid–Skene's posterior, the vote's ``ȳ``, the model)."""
    present = [x for x in (ev.ds_posterior, ev.vote, ev.model) if x is not None]
    if not present:
        raise ValueError(f"score {method!r} needs at least one of the Dawid–Skene posterior, the vote or the model")
    with np.errstate(invalid="ignore"):
        q = np.nanmean(np.stack(present), axis=0)
    t = _decision(ev, method)
    return np.abs(t - q)


#: Pseudo-counts of the model's own estimate in a stratum's calibrated error rate (:func:`calibrated_error`).
CALIBRATION_PRIOR = 10.0


def calibrated_error(ev: QueueEvidence, method: str = "calibrated_error") -> np.ndarray:
    """``P(the training target is wrong)`` per entry, calibrated on the hand labels given so far (an audit).

    Entries fall into strata: finding × the target's value (the vote's decision, else Dawid–Skene's)
    × whether the sets disagree. A stratum's rate is its measured error on the hand-labelled entries,
    shrunk toward the mean :func:`expected_error <finding_scores>` of the stratum with
    :data:`CALIBRATION_PRIOR` pseudo-counts; within a stratum, entries keep ``expected_error``'s order.
    Unlike every label-only or model score, this sees errors that all sets make alike (a hand-label
    definition the labelers do not share), once a random audit has met them. Needs ``hand``.
    """
    hand = ev.need("hand", method)
    base = expected_error(ev, method)
    target = _decision(ev, method)
    contested = disagreement_scores(ev.labels) > 0
    known = ~np.isnan(hand)
    wrong = known & (target != hand)
    out = np.full(base.shape, np.nan)
    for j in range(base.shape[1]):
        for value in (0.0, 1.0):
            for split in (False, True):
                stratum = (target[:, j] == value) & (contested[:, j] == split)
                if not stratum.any():
                    continue
                prior = float(np.nanmean(base[stratum, j])) if (~np.isnan(base[stratum, j])).any() else 0.0
                seen, missed = int((stratum & known[:, j]).sum()), int((stratum & wrong[:, j]).sum())
                rate = (missed + CALIBRATION_PRIOR * prior) / (seen + CALIBRATION_PRIOR)
                # The stratum's rate first; the model's estimate only orders entries within a stratum.
                out[stratum, j] = rate + 1e-3 * np.nan_to_num(base[stratum, j])
    return out


#: The scores a user picks from: the default, its audit-calibrated form, and one that needs no trained run.
METHODS: dict[str, Callable[[QueueEvidence], np.ndarray]] = {
    "contested_expected_error": lambda ev: np.where(
        disagreement_scores(ev.labels) > 0, expected_error(ev, "contested_expected_error"), 0.0
    ),
    "calibrated_error": calibrated_error,
    "disagreement": lambda ev: disagreement_scores(ev.labels),
}


def finding_scores(
    method: str, ev: QueueEvidence, methods: Mapping[str, Callable[[QueueEvidence], np.ndarray]] = METHODS
) -> np.ndarray:
    """Score per (item, finding), ``S × N``, higher = more worth a hand label; 0 where a hand label exists."""
    if method not in methods:
        raise ValueError(f"unknown relabel score {method!r}; choose one of {sorted(methods)}")
    scores = np.asarray(methods[method](ev), dtype=np.float64)
    if ev.hand is not None:
        scores = np.where(np.isnan(ev.hand), scores, 0.0)
    return scores


def image_scores(scores: np.ndarray, aggregate: str = "sum") -> np.ndarray:
    """Per-image score from ``S × N`` finding scores (NaN ignored; an image with none scores 0)."""
    scores = np.asarray(scores, dtype=np.float64)
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; choose one of {AGGREGATES}")
    has = (~np.isnan(scores)).any(1)
    filled = np.nan_to_num(scores, nan=0.0)
    if aggregate == "sum":
        out = filled.sum(1)
    elif aggregate == "max":
        out = filled.max(1)
    else:
        out = filled.sum(1) / np.maximum((~np.isnan(scores)).sum(1), 1)
    return np.where(has, out, 0.0)


def queue_scores(ev: QueueEvidence, method: str = QUEUE_METHOD, aggregate: str = QUEUE_AGGREGATE) -> tuple[np.ndarray, np.ndarray]:
    """``(image scores S, finding scores S × N)`` of one method; images fully hand-labelled score −inf."""
    per_finding = finding_scores(method, ev)
    per_image = image_scores(per_finding, aggregate)
    if ev.hand is not None:
        per_image = np.where((~np.isnan(ev.hand)).all(1), -np.inf, per_image)
    return per_image, per_finding


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first; ties keep item order (a stable sort)."""
    scores = np.asarray(scores, dtype=np.float64)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    order = np.argsort(-scores, kind="stable")
    order = order[np.isfinite(scores[order])]
    return order[:n]


# ------------------------------------------------------------------------------------------------
# Export: the queue CSV, the blank template, the contact sheet
# ------------------------------------------------------------------------------------------------
def item_id(item: Mapping[str, Any], index: int, id_key: str | None = None) -> str:
    """How the queue and the template name an item: ``id_key`` (default ``dicom_id``), else its image path as written."""
    for key in ([id_key] if id_key else []) + ["dicom_id"]:
        if item.get(key) not in (None, ""):
            return str(item[key])
    image = source_image(item)
    if isinstance(image, (str, Path)):
        return str(image)
    return str(index)


def source_image(item: Mapping[str, Any]) -> Any:
    """The item's original image (``source_image`` once the image cache has replaced ``image``), path or array."""
    return item.get("source_image") if item.get("source_image") is not None else item.get("image")


def disagreeing_findings(labels: np.ndarray, findings: Sequence[str]) -> list[list[str]]:
    """Per item, the findings on which the label sets disagree (``S × M × N`` → lists of names)."""
    contested = disagreement_scores(labels) > 0
    return [[findings[j] for j in np.flatnonzero(row)] for row in contested]


def _cell(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


def queue_rows(
    items: Sequence[Mapping[str, Any]],
    order: Sequence[int],
    findings: Sequence[str],
    set_names: Sequence[str],
    ev: QueueEvidence,
    scores: np.ndarray,
    ids: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """One CSV row per queued item: rank, id, study, score, disagreeing findings, each set's labels, the vote's ȳ."""
    contested = disagreeing_findings(ev.labels, findings)
    rows = []
    for rank, i in enumerate(order, start=1):
        item = items[i]
        row = {"rank": str(rank), "id": ids[i] if ids is not None else item_id(item, i),
               "study": str(item.get("study_id", "")), "score": f"{scores[i]:.4f}",
               "disagreeing": "; ".join(contested[i])}
        for k, name in enumerate(set_names):
            row.update({f"{name}:{f}": _cell(ev.labels[i, k, j]) for j, f in enumerate(findings)})
        if ev.vote is not None:
            row.update({f"vote:{f}": "" if np.isnan(ev.vote[i, j]) else f"{ev.vote[i, j]:.3f}" for j, f in enumerate(findings)})
        rows.append(row)
    return rows


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_template(path: str | Path, ids: Sequence[str], findings: Sequence[str], ranks: Sequence[int] | None = None) -> Path:
    """A blank hand-label template: ``id``, ``rank`` and one empty column per finding (fill 1, 0 or leave blank)."""
    ranks = list(ranks) if ranks is not None else list(range(1, len(ids) + 1))
    rows = [{"id": i, "rank": str(r), **{f: "" for f in findings}} for i, r in zip(ids, ranks)]
    return _write_csv(Path(path), ["id", "rank", *findings], rows)


def _thumbnail(image: Any, size: int) -> np.ndarray:
    """A ``size × size`` grey thumbnail in [0, 1] from an image path (JPEG/PNG/DICOM) or an array."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        from l2v_monai.data.transforms import read_chest_xray

        pixels = read_chest_xray(image)
    else:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels.reshape(pixels.shape[-2:]) if pixels.ndim > 2 else pixels
        low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    thumb = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(thumb, dtype=np.float32) / 255.0


def contact_sheet(
    path: str | Path,
    images: Sequence[Any],
    captions: Sequence[str],
    columns: int = 8,
    thumb: int = 128,
) -> Path:
    """A PNG grid of thumbnails (image paths or arrays), each captioned (rank and disagreeing findings only).

    An image that cannot be read gets a grey tile captioned "unreadable" rather than stopping the export.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    count = len(images)
    cols = max(1, min(columns, count))
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, rows * 2.6), squeeze=False)
    for index, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if index >= count:
            continue
        caption = captions[index]
        try:
            tile = _thumbnail(images[index], thumb)
        except Exception:  # noqa: BLE001 (one bad file must not stop the sheet; the tile says so)
            tile, caption = np.full((thumb, thumb), 0.5, dtype=np.float32), f"{caption}\n(unreadable)"
        ax.imshow(tile, cmap="gray", vmin=0, vmax=1)
        # Below the tile, so a long caption never runs into the row above.
        ax.text(0.5, -0.03, caption, transform=ax.transAxes, ha="center", va="top", fontsize=6.5)
    fig.tight_layout(h_pad=2.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _caption(rank: int, contested: Sequence[str], width: int = 28) -> str:
    """``#3`` and the disagreeing findings, wrapped; never an id, a path or report text."""
    import textwrap

    text = ", ".join(contested) if contested else "sets agree"
    lines = textwrap.wrap(text, width)
    if len(lines) > 3:
        lines = lines[:3]
        lines[2] = lines[2].rstrip(",") + " …"
    return f"#{rank}\n" + "\n".join(lines)


def write_queue(
    out_dir: str | Path,
    items: Sequence[Mapping[str, Any]],
    order: Sequence[int],
    findings: Sequence[str],
    set_names: Sequence[str],
    ev: QueueEvidence,
    scores: np.ndarray,
    ids: Sequence[str] | None = None,
    sheet: bool = True,
    sheet_limit: int = 200,
) -> dict[str, Path]:
    """Write ``queue.csv``, ``hand_labels.csv`` and (items with images, ``sheet``) ``contact_sheet.png``.

    The sheet shows the first ``sheet_limit`` queued items. Returns the paths written.
    """
    out = Path(out_dir)
    rows = queue_rows(items, order, findings, set_names, ev, scores, ids)
    columns = list(rows[0]) if rows else ["rank", "id", "study", "score", "disagreeing"]
    paths = {"queue": _write_csv(out / "queue.csv", columns, rows)}
    paths["template"] = write_template(out / "hand_labels.csv", [r["id"] for r in rows], findings)
    if sheet and rows and all(source_image(items[i]) is not None for i in order):
        shown = list(order)[:sheet_limit]
        contested = disagreeing_findings(ev.labels[shown], findings)
        paths["contact_sheet"] = contact_sheet(
            out / "contact_sheet.png", [source_image(items[i]) for i in shown],
            [_caption(rank, c) for rank, c in enumerate(contested, start=1)],
        )
    return paths


def with_hand(ev: QueueEvidence, hand: np.ndarray | None) -> QueueEvidence:
    """The same evidence with these hand labels (``S × N``, NaN = none)."""
    return replace(ev, hand=hand)
