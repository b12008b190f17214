"""How well label sets agree with a hand-labelled truth (the paper's Table 4, left part).

Per label set and finding, over the reports where the truth is labelled (not NaN): sensitivity,
specificity and balanced accuracy (their mean), for findings with at least ``min_positives`` true
positives. Per labeler, its *better mapping* is whichever of ``_u0`` / ``_u1`` has the higher mean
balanced accuracy. Also: the fraction of reports on which the label sets disagree on at least one
finding.

For OpenI the truth is the MeSH mapping of ``l2v_monai.data.openi.openi_labels``; note that its
negatives for every finding but No Finding are the reports tagged ``normal``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.extras import import_extra
from l2v_monai.findings import CHEXPERT_FINDINGS

MIN_POSITIVES = 20


def finding_quality(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    """One set's 0/1 labels vs a 1/0/NaN truth for one finding (NaN truth left out)."""
    labelled = ~np.isnan(truth)
    pred = predicted[labelled] >= 0.5
    true = truth[labelled] == 1.0
    positives, negatives = int(true.sum()), int((~true).sum())
    sensitivity = float((pred & true).sum() / positives) if positives else math.nan
    specificity = float((~pred & ~true).sum() / negatives) if negatives else math.nan
    return {
        "positives": positives,
        "negatives": negatives,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "balanced_accuracy": (sensitivity + specificity) / 2,
    }


def disagreement_fraction(labels: np.ndarray) -> float:
    """Fraction of items (axis 0) on which the sets (axis 1) differ on at least one finding (axis 2)."""
    if labels.shape[0] == 0:
        return math.nan
    differs = (labels != labels[:, :1, :]).any(axis=(1, 2))
    return float(differs.mean())


def quality_table(
    labels: np.ndarray,
    truth: np.ndarray,
    set_names: Sequence[str],
    findings: Sequence[str] = CHEXPERT_FINDINGS,
    min_positives: int = MIN_POSITIVES,
) -> dict[str, Any]:
    """``labels`` (S × K × N) vs ``truth`` (S × N, NaN = unlabelled) → a JSON-ready quality table.

    Keys: ``findings`` (those with ≥ ``min_positives`` positives), ``sets`` (name → finding →
    metrics, plus ``mean_balanced_accuracy``), ``better_mapping`` (labeler → best set and its
    mean), ``disagreement_fraction``, ``reports``.
    """
    if labels.ndim != 3 or labels.shape[1] != len(set_names) or labels.shape[2] != len(findings):
        raise ValueError(f"labels shape {labels.shape} does not match {len(set_names)} sets × {len(findings)} findings")
    if truth.shape != (labels.shape[0], len(findings)):
        raise ValueError(f"truth shape {truth.shape} does not match {labels.shape[0]} reports × {len(findings)}")
    kept = [j for j in range(len(findings)) if int((truth[:, j] == 1.0).sum()) >= min_positives]
    sets: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(set_names):
        per_finding = {findings[j]: finding_quality(labels[:, k, j], truth[:, j]) for j in kept}
        mean = float(np.mean([row["balanced_accuracy"] for row in per_finding.values()])) if kept else math.nan
        sets[name] = {"findings": per_finding, "mean_balanced_accuracy": mean}
    better: dict[str, dict[str, Any]] = {}
    for name, row in sets.items():
        labeler = name.rsplit("_", 1)[0]
        if labeler not in better or row["mean_balanced_accuracy"] > better[labeler]["mean_balanced_accuracy"]:
            better[labeler] = {"set": name, "mean_balanced_accuracy": row["mean_balanced_accuracy"]}
    return {
        "reports": int(labels.shape[0]),
        "min_positives": min_positives,
        "findings": [findings[j] for j in kept],
        "sets": sets,
        "better_mapping": better,
        "disagreement_fraction": disagreement_fraction(labels),
    }


def openi_quality(
    archive: str | Path, labelers: Sequence[str] | None = None, progress: bool = False
) -> dict[str, Any]:
    """Label every OpenI report (FINDINGS + IMPRESSION) and compare with its MeSH labels."""
    from l2v_monai.data.openi import read_openi_reports
    from l2v_monai.labelers import LABELERS, label_sets

    reports = read_openi_reports(archive)
    texts = [report.text for report in reports]
    truth = np.stack([report.mesh_labels(CHEXPERT_FINDINGS) for report in reports])
    labels, names = label_sets(texts, tuple(labelers or LABELERS), progress=progress)
    table = quality_table(labels, truth, names)
    table["empty_reports"] = sum(not text for text in texts)
    return table


def markdown_table(table: dict[str, Any], digits: int = 3) -> str:
    """The balanced-accuracy table (sets × findings, plus sensitivity/specificity rows) as markdown."""
    findings = table["findings"]
    short = [finding.replace("Enlarged Cardiomediastinum", "Enl. Cardiomed.") for finding in findings]
    lines = [
        "| label set | metric | " + " | ".join(short) + " | mean |",
        "|---|---|" + "---:|" * (len(findings) + 1),
    ]
    positives = [str(table["sets"][next(iter(table["sets"]))]["findings"][f]["positives"]) for f in findings]
    lines.append("| MeSH positives | n | " + " | ".join(positives) + " | |")
    for name, row in table["sets"].items():
        for metric, label in (("balanced_accuracy", "bal. acc."), ("sensitivity", "sens."), ("specificity", "spec.")):
            values = [row["findings"][f][metric] for f in findings]
            mean = f"**{row['mean_balanced_accuracy']:.{digits}f}**" if metric == "balanced_accuracy" else ""
            lines.append(
                f"| {name} | {label} | " + " | ".join(f"{value:.{digits}f}" for value in values) + f" | {mean} |"
            )
    return "\n".join(lines)


def plot_heatmap(table: dict[str, Any], path: str | Path) -> None:
    """Balanced accuracy per set × finding as a PNG heatmap (needs the ``[eval]`` extra: matplotlib)."""
    matplotlib = import_extra("matplotlib", "eval", "the labeler heatmap (plot_heatmap)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    findings = table["findings"]
    names = list(table["sets"])
    grid = np.array([[table["sets"][n]["findings"][f]["balanced_accuracy"] for f in findings] for n in names])
    figure, axes = plt.subplots(figsize=(1.0 + 0.75 * len(findings), 1.2 + 0.55 * len(names)))
    image = axes.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(findings)), findings, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(findings)):
            axes.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if grid[i, j] < 0.8 else "black")
    figure.colorbar(image, ax=axes, label="bal. acc. vs MeSH")
    axes.set_title(f"Report labelers vs OpenI MeSH ({table['reports']} reports)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
