"""The report's figures beside the ROC curves: reliability diagrams (before/after recalibration) and a ΔAUC forest plot.

Matplotlib from the ``[eval]`` extra, drawn on bare ``Figure`` objects (no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from l2v_monai.evaluation.plots import new_figure, safe_file_stem, unit_square
from l2v_monai.extras import import_extra

__all__ = ["plot_reliability", "plot_forest"]


def plot_reliability(
    curves: Mapping[str, Mapping[str, Any]], out_dir: str | Path, after: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Path]:
    """One reliability diagram per finding (``reliability_<finding>.png``): observed rate against mean probability.

    ``curves`` and ``after`` are :func:`~l2v_monai.evaluation.calibration.calibration_summary` results;
    with ``after`` each diagram shows both, so the effect of the recalibration is visible.
    """
    import_extra("matplotlib", "eval", "reliability diagrams")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for finding, stats in curves.items():
        if not stats.get("estimable"):
            continue
        figure = new_figure(4.0, 4.0)
        axes = figure.add_subplot(1, 1, 1)
        axes.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="perfectly calibrated")
        series = [("as trained", stats, "o-")]
        if after and after.get(finding, {}).get("estimable"):
            series.append(("recalibrated (out of fold)", after[finding], "s-"))
        for label, s, style in series:
            axes.plot(s["curve"]["predicted"], s["curve"]["observed"], style, ms=3,
                      label=f"{label}: ECE {s['ece']:.3f}, Brier {s['brier']:.3f}")
        unit_square(axes, f"{finding} (n={stats['n']})", "mean predicted probability", "observed rate", "upper left", 6)
        figure.tight_layout()
        path = out / f"reliability_{safe_file_stem(finding)}.png"
        figure.savefig(path, format="png")
        written.append(path)
    return written


def plot_forest(rows: Sequence[tuple[str, float, float, float, str]], path: str | Path, title: str) -> Path:
    """A forest plot of ``(label, difference, low, high, note)`` rows: ΔAUC with its interval, 0 marked."""
    import_extra("matplotlib", "eval", "forest plots")
    rows = [r for r in rows if not math.isnan(r[1])]
    figure = new_figure(7.0, 0.35 * len(rows) + 1.3)
    axes = figure.add_subplot(1, 1, 1)
    for i, (label, diff, low, high, note) in enumerate(reversed(rows)):
        bold = label.startswith("Macro")
        axes.plot([low, high], [i, i], color="black", lw=1.5 if bold else 1.0)
        axes.plot([diff], [i], "D" if bold else "s", color="black", ms=6 if bold else 4)
        axes.text(1.02, i, note, transform=axes.get_yaxis_transform(), va="center", fontsize=7)
    axes.axvline(0, color="grey", ls="--", lw=0.8)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels([r[0] for r in reversed(rows)], fontsize=8)
    axes.set_xlabel("ΔAUC (95 % interval)", fontsize=8)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
