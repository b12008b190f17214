"""The whole evaluation of a model on hand labels: AUC table, ROC plots and ``summary.json``.

Needs the ``[eval]`` extra (pandas for the table, matplotlib for the plots).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l2v_monai.evaluation.auc import label_set_auc, per_finding_auc
from l2v_monai.evaluation.inputs import as_float_array
from l2v_monai.evaluation.plots import plot_roc_curves
from l2v_monai.evaluation.tables import auc_table, json_safe, write_auc_tables
from l2v_monai.extras import import_extra

__all__ = ["evaluate_predictions"]

logger = logging.getLogger(__name__)


def evaluate_predictions(
    y_true: Any,
    y_score: Any,
    findings: Sequence[str],
    out_dir: str | Path,
    label_sets: Any = None,
    label_set_names: Sequence[str] | None = None,
    model_name: str = "model",
) -> dict[str, Any]:
    """Score a model on hand labels and write ``auc.{md,csv,json}``, ``roc/*.png`` and ``summary.json``.

    With ``label_sets`` (``B × M × N``) and ``label_set_names``, the table also holds each label
    set's own AUC against the hand labels, left of the model column as in Table 4. Returns the
    summary (JSON-safe: NaN written as ``None``) that ``summary.json`` holds.
    """
    # Both extra packages are checked up front: a missing one must not leave half the files written.
    for module in ("pandas", "matplotlib"):
        import_extra(module, "eval", "evaluate_predictions (AUC tables and ROC plots)")
    findings = list(findings)
    out = Path(out_dir)
    model = per_finding_auc(y_true, y_score, findings)
    columns: dict[str, dict[str, Any]] = {}
    sets: dict[str, dict[str, Any]] = {}
    if label_sets is not None:
        if label_set_names is None:
            raise ValueError("label_sets were given without label_set_names")
        sets = label_set_auc(label_sets, label_set_names, y_true, findings)
        if model_name in sets:
            raise ValueError(f"model_name {model_name!r} clashes with a label set name")
        columns.update(sets)
    elif label_set_names is not None:
        raise ValueError("label_set_names were given without label_sets")
    columns[model_name] = model

    table = auc_table(columns, findings)
    tables = write_auc_tables(table, out, stem="auc")
    plots = plot_roc_curves(y_true, y_score, findings, out / "roc", label=model_name)
    logger.info(
        "%s: macro AUC %.4f over %d finding(s); skipped: %s",
        model_name,
        model["macro_auc"],
        model["n_scored"],
        ", ".join(model["skipped"]) or "none",
    )

    summary = {
        "model": model_name,
        "n_samples": int(as_float_array(y_true, "y_true").shape[0]),
        "findings": findings,
        "macro_auc": model["macro_auc"],
        "n_scored": model["n_scored"],
        "per_finding": model["per_finding"],
        "skipped": model["skipped"],
        "label_sets": {
            name: {
                "macro_auc": r["macro_auc"],
                "per_finding": {f: v["auc"] for f, v in r["per_finding"].items()},
                "skipped": r["skipped"],
            }
            for name, r in sets.items()
        },
        "files": {
            "tables": {k: str(v) for k, v in tables.items()},
            "roc": [str(p) for p in plots],
            "summary": str(out / "summary.json"),
        },
    }
    summary = json_safe(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
