"""ROC curves as PNGs: one per scored finding and a grid of all. Needs matplotlib, from the ``[eval]``
extra, imported when a figure is drawn (bare ``Figure`` + Agg canvas: no pyplot global state).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from l2v_monai.evaluation.auc import per_finding_auc
from l2v_monai.evaluation.inputs import as_float_array
from l2v_monai.extras import import_extra

__all__ = ["plot_roc_curves", "safe_file_stem"]

logger = logging.getLogger(__name__)


def safe_file_stem(name: str) -> str:
    """``"Enlarged Cardiomediastinum"`` -> ``"enlarged_cardiomediastinum"``: letters, digits and ``_`` only."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    return stem or "finding"


def new_figure(width: float, height: float):
    # A bare Figure with an Agg canvas: no pyplot global state, no backend switching for the caller.
    backend = import_extra("matplotlib.backends.backend_agg", "eval", "ROC plots (plot_roc_curves)")
    figure_module = import_extra("matplotlib.figure", "eval", "ROC plots (plot_roc_curves)")
    figure = figure_module.Figure(figsize=(width, height), dpi=100)
    backend.FigureCanvasAgg(figure)
    return figure


def unit_square(axes, title: str, xlabel: str, ylabel: str, legend: str, legend_size: int = 7) -> None:
    """Axes over [0, 1]² with equal scales, a small title, labels and legend: every per-finding panel."""
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.set_title(title, fontsize=9)
    axes.set_xlabel(xlabel, fontsize=8)
    axes.set_ylabel(ylabel, fontsize=8)
    axes.legend(loc=legend, fontsize=legend_size)


def _draw_roc(axes, fpr: np.ndarray, tpr: np.ndarray, title: str, stats: Mapping[str, Any], label: str) -> None:
    axes.plot(fpr, tpr, lw=1.5, label=f"{label} (AUC {stats['auc']:.3f})")
    axes.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    unit_square(axes, f"{title}\nn={stats['n']}, positives={stats['positives']}", "false positive rate",
                "true positive rate", "lower right")


def plot_roc_curves(
    y_true: Any,
    y_score: Any,
    findings: Sequence[str],
    out_dir: str | Path,
    grid: bool = True,
    label: str = "model",
    prefix: str = "roc_",
) -> list[Path]:
    """One ROC PNG per finding (``<prefix><finding>.png``) plus, with ``grid``, ``<prefix>all.png``.

    Skipped findings (no labels or one class) get no PNG; they are logged at INFO. Returns the
    written paths, per-finding files first, the grid last. Needs the ``[eval]`` extra (matplotlib).
    """
    # Checked before any input work, so that a missing extra is the first error, not the last.
    import_extra("matplotlib", "eval", "ROC plots (plot_roc_curves)")
    findings = list(findings)
    result = per_finding_auc(y_true, y_score, findings)
    truth, scores = as_float_array(y_true, "y_true"), as_float_array(y_score, "y_score")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    curves: list[tuple[str, np.ndarray, np.ndarray]] = []
    written: list[Path] = []
    used_stems: set[str] = set()
    for col, finding in enumerate(findings):
        stats = result["per_finding"][finding]
        if stats["skipped"]:
            continue
        present = ~np.isnan(truth[:, col])
        fpr, tpr, _ = roc_curve(truth[present, col], scores[present, col])
        curves.append((finding, fpr, tpr))
        stem = safe_file_stem(finding)
        while stem in used_stems or stem == "all":  # distinct names may map to one stem
            stem += "_"
        used_stems.add(stem)
        figure = new_figure(4.0, 4.0)
        _draw_roc(figure.add_subplot(1, 1, 1), fpr, tpr, finding, stats, label)
        figure.tight_layout()
        path = out / f"{prefix}{stem}.png"
        figure.savefig(path, format="png")
        written.append(path)
    if result["skipped"]:
        logger.info("ROC plots skipped for findings without both classes: %s", ", ".join(result["skipped"]))

    if grid and curves:
        cols = math.ceil(math.sqrt(len(curves)))
        rows = math.ceil(len(curves) / cols)
        figure = new_figure(3.2 * cols, 3.2 * rows)
        for i, (finding, fpr, tpr) in enumerate(curves, start=1):
            _draw_roc(figure.add_subplot(rows, cols, i), fpr, tpr, finding, result["per_finding"][finding], label)
        figure.tight_layout()
        path = out / f"{prefix}all.png"
        figure.savefig(path, format="png")
        written.append(path)
    return written
