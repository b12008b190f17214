"""Evaluation on a hand-labelled set, split by job:

* :mod:`~l2v_monai.evaluation.inputs`: input checks (B × N matrices, 0/1/NaN labels, finite scores);
* :mod:`~l2v_monai.evaluation.auc`: NaN-safe per-finding ROC-AUC, for a model and for each label set;
* :mod:`~l2v_monai.evaluation.metric`: :class:`MacroAUC` (MONAI metric) and :class:`MacroAUCHandler` (Ignite);
* :mod:`~l2v_monai.evaluation.collector`: :class:`PredictionCollector`, an evaluator's outputs gathered;
* :mod:`~l2v_monai.evaluation.tables`: AUC tables as markdown, CSV and JSON (pandas, ``[eval]``);
* :mod:`~l2v_monai.evaluation.plots`: ROC PNGs (matplotlib, ``[eval]``);
* :mod:`~l2v_monai.evaluation.summary`: :func:`evaluate_predictions`, all of the above written to a folder.

The hospital-side report (``l2v-evaluate``'s ``report.md``, ``l2v-compare``; see docs/evaluation.md):

* :mod:`~l2v_monai.evaluation.bootstrap`: resampling studies or whole patients, AUC on every resample at once;
* :mod:`~l2v_monai.evaluation.delong`: DeLong's interval and paired test;
* :mod:`~l2v_monai.evaluation.intervals`: per-finding and macro AUC with intervals, PR-AUC;
* :mod:`~l2v_monai.evaluation.compare`: paired ΔAUC of runs, Holm's correction;
* :mod:`~l2v_monai.evaluation.operating_points`: thresholds for a rule, cross-fitted, with Wilson intervals;
* :mod:`~l2v_monai.evaluation.calibration`: Brier, ECE, reliability curves, Platt / temperature / isotonic;
* :mod:`~l2v_monai.evaluation.subgroups`: AUC per metadata value, small groups flagged;
* :mod:`~l2v_monai.evaluation.hand_set`: a predictions CSV matched to a datalist split;
* :mod:`~l2v_monai.evaluation.report`, :mod:`~l2v_monai.evaluation.compare_report`,
  :mod:`~l2v_monai.evaluation.report_figures`: the markdown reports and their PNGs.

Importing any of them needs only the core; the ``[eval]`` parts import pandas/matplotlib when
called and otherwise raise an ``ImportError`` naming ``pip install 'l2v-monai[eval]'``. Bundle
configs name the public parts from here, e.g. ``l2v_monai.evaluation.MacroAUCHandler``.
"""

from __future__ import annotations

from l2v_monai.evaluation.auc import (
    SKIP_NO_LABELS,
    SKIP_ONLY_NEGATIVES,
    SKIP_ONLY_POSITIVES,
    describe_skipped,
    label_set_auc,
    per_finding_auc,
)
from l2v_monai.evaluation.collector import PredictionCollector
from l2v_monai.evaluation.compare import compare_runs, holm
from l2v_monai.evaluation.compare_report import comparison_report
from l2v_monai.evaluation.intervals import auc_intervals
from l2v_monai.evaluation.report import hospital_report
from l2v_monai.evaluation.metric import MacroAUC, MacroAUCHandler
from l2v_monai.evaluation.plots import plot_roc_curves, safe_file_stem
from l2v_monai.evaluation.summary import evaluate_predictions
from l2v_monai.evaluation.tables import AVERAGE_ROW, auc_table, format_markdown_table, write_auc_tables

__all__ = [
    "SKIP_NO_LABELS",
    "SKIP_ONLY_POSITIVES",
    "SKIP_ONLY_NEGATIVES",
    "AVERAGE_ROW",
    "per_finding_auc",
    "label_set_auc",
    "describe_skipped",
    "auc_table",
    "format_markdown_table",
    "write_auc_tables",
    "plot_roc_curves",
    "safe_file_stem",
    "evaluate_predictions",
    "MacroAUC",
    "MacroAUCHandler",
    "PredictionCollector",
    "auc_intervals",
    "compare_runs",
    "holm",
    "hospital_report",
    "comparison_report",
]
