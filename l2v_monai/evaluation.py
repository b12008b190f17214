"""Evaluation on a hand-labelled set: NaN-safe per-finding ROC-AUC, tables and ROC plots.

The hand labels (``y_true``, ``B × N``) are clean 0/1 values with NaN where a finding was not
labelled. Every AUC is computed per finding on the rows where that finding's hand label is
present; a finding with no labelled rows or a single class gets AUC NaN and is reported as
skipped, never raised. Macro averages run over the findings with a defined AUC, like the
"Average" row of Table 4 in Wang et al. (WACV 2024), whose left part (each training label
set's own AUC against the hand labels) :func:`label_set_auc` reproduces.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "SKIP_NO_LABELS",
    "SKIP_ONLY_POSITIVES",
    "SKIP_ONLY_NEGATIVES",
    "AVERAGE_ROW",
    "per_finding_auc",
    "label_set_auc",
    "auc_table",
    "format_markdown_table",
    "write_auc_tables",
    "plot_roc_curves",
    "safe_file_stem",
    "evaluate_predictions",
    "MacroAUC",
    "MacroAUCHandler",
]

logger = logging.getLogger(__name__)

SKIP_NO_LABELS = "no labels"
SKIP_ONLY_POSITIVES = "only positives"
SKIP_ONLY_NEGATIVES = "only negatives"
AVERAGE_ROW = "Average"


# ----------------------------------------------------------------------------------------------
# input checking
# ----------------------------------------------------------------------------------------------
def _as_float_array(values: Any, name: str) -> np.ndarray:
    """``values`` (numpy, torch or nested lists with ``None``) as a float64 array."""
    if isinstance(values, torch.Tensor):
        # .double() first: numpy has no bfloat16 (AMP logits).
        values = values.detach().cpu().double().numpy()
    try:
        # None (JSON null) becomes NaN through the float dtype.
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric (numbers or null/NaN): {err}") from None


def _check_matrix(y: np.ndarray, name: str, findings: Sequence[str]) -> None:
    if len(set(findings)) != len(findings):
        raise ValueError(f"finding names must be unique, got {list(findings)}")
    if y.ndim != 2:
        raise ValueError(f"{name} must be a B x N matrix (samples x findings), got shape {tuple(y.shape)}")
    if y.shape[1] != len(findings):
        raise ValueError(f"{name} has {y.shape[1]} findings (columns) but {len(findings)} finding names were given")


def _first_bad(bad: np.ndarray) -> tuple[int, int]:
    row, col = np.argwhere(bad)[0]
    return int(row), int(col)


def _check_binary_labels(y: np.ndarray, name: str, findings: Sequence[str]) -> None:
    """Hand labels must be 0, 1 or NaN; anything else (e.g. an unmapped -1 "uncertain") is an error."""
    bad = ~(np.isnan(y) | (y == 0) | (y == 1))
    if bad.any():
        row, col = _first_bad(bad)
        raise ValueError(
            f"{name}[row {row}, {findings[col]!r}] = {float(y[row, col]):g}: labels must be 0, 1 or NaN "
            f"({int(bad.sum())} bad value(s) in total)"
        )


def _check_finite_scores(y: np.ndarray, name: str, findings: Sequence[str]) -> None:
    bad = ~np.isfinite(y)
    if bad.any():
        row, col = _first_bad(bad)
        raise ValueError(
            f"{name}[row {row}, {findings[col]!r}] = {float(y[row, col]):g}: scores must be finite "
            f"({int(bad.sum())} non-finite value(s) in total)"
        )


# ----------------------------------------------------------------------------------------------
# AUC computation
# ----------------------------------------------------------------------------------------------
def _skip_reason(n: int, positives: int) -> str | None:
    if n == 0:
        return SKIP_NO_LABELS
    if positives == n:
        return SKIP_ONLY_POSITIVES
    if positives == 0:
        return SKIP_ONLY_NEGATIVES
    return None


def _auc_by_finding(y_true: np.ndarray, y_score: np.ndarray, findings: Sequence[str]) -> dict[str, Any]:
    """Per-finding AUC over the rows where both the label and the score are present."""
    per_finding: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for col, finding in enumerate(findings):
        present = ~np.isnan(y_true[:, col]) & ~np.isnan(y_score[:, col])
        labels, scores = y_true[present, col], y_score[present, col]
        n, positives = int(labels.size), int((labels == 1).sum())
        reason = _skip_reason(n, positives)
        auc = math.nan if reason else float(roc_auc_score(labels, scores))
        per_finding[finding] = {"auc": auc, "n": n, "positives": positives, "negatives": n - positives, "skipped": reason}
        if reason:
            skipped[finding] = reason
    defined = [v["auc"] for v in per_finding.values() if v["skipped"] is None]
    return {
        "per_finding": per_finding,
        "macro_auc": float(np.mean(defined)) if defined else math.nan,
        "n_scored": len(defined),
        "skipped": skipped,
    }


def per_finding_auc(
    y_true: Any, y_score: Any, findings: Sequence[str], names: tuple[str, str] = ("y_true", "y_score")
) -> dict[str, Any]:
    """ROC-AUC of ``y_score`` (``B × N``) against hand labels ``y_true`` (``B × N``, NaN = unlabelled).

    Returns ``{"per_finding": {finding: {"auc", "n", "positives", "negatives", "skipped"}},
    "macro_auc", "n_scored", "skipped": {finding: reason}}``; ``skipped`` reasons are
    ``"no labels"``, ``"only positives"`` or ``"only negatives"`` and those findings have AUC NaN.
    ``macro_auc`` is the mean over the findings with a defined AUC (NaN if there are none).
    Scores may be logits or probabilities (AUC only depends on their order) but must be finite.
    ``names`` are what error messages call the two inputs.
    """
    findings = list(findings)
    truth_name, score_name = names
    truth, scores = _as_float_array(y_true, truth_name), _as_float_array(y_score, score_name)
    _check_matrix(truth, truth_name, findings)
    _check_matrix(scores, score_name, findings)
    if truth.shape != scores.shape:
        raise ValueError(f"{truth_name} has shape {truth.shape} but {score_name} has shape {scores.shape}")
    _check_binary_labels(truth, truth_name, findings)
    _check_finite_scores(scores, score_name, findings)
    return _auc_by_finding(truth, scores, findings)


def label_set_auc(
    labels: Any,
    label_set_names: Sequence[str],
    y_true: Any,
    findings: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each training label set's AUC against the hand labels (the left part of Table 4).

    ``labels`` is ``B × M × N`` (NaN = the label set has no label there); each label set's 0/1
    values are used as scores, so its AUC is its balanced accuracy. Per finding, rows where
    either the label set or the hand label is missing are left out. Returns
    ``{label_set_name: per_finding_auc-style result}``. ``findings`` defaults to the 14
    CheXpert findings.
    """
    if findings is None:
        from l2v_monai.findings import CHEXPERT_FINDINGS

        findings = CHEXPERT_FINDINGS
    findings, names = list(findings), list(label_set_names)
    sets, truth = _as_float_array(labels, "labels"), _as_float_array(y_true, "y_true")
    if sets.ndim != 3:
        raise ValueError(f"labels must be B x M x N (samples x label sets x findings), got shape {tuple(sets.shape)}")
    if sets.shape[1] != len(names):
        raise ValueError(f"labels has {sets.shape[1]} label sets but {len(names)} label set names were given")
    if len(set(names)) != len(names):
        raise ValueError(f"label set names must be unique, got {names}")
    _check_matrix(truth, "y_true", findings)
    if sets.shape[0] != truth.shape[0] or sets.shape[2] != truth.shape[1]:
        raise ValueError(f"labels has shape {sets.shape} but y_true has shape {truth.shape}; expected B x M x N and B x N")
    _check_binary_labels(truth, "y_true", findings)
    results = {}
    for m, name in enumerate(names):
        # The label sets were mapped to 0/1 upstream; a -1 here would be an unmapped "uncertain".
        _check_binary_labels(sets[:, m, :], f"labels[{name!r}]", findings)
        results[name] = _auc_by_finding(truth, sets[:, m, :], findings)
    return results


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------
def auc_table(results: Mapping[str, Mapping[str, Any]], findings: Sequence[str]) -> pd.DataFrame:
    """One column per model / label set, one row per finding plus an ``"Average"`` row.

    Each value of ``results`` is a :func:`per_finding_auc` result, or a plain ``{finding: auc}``
    mapping (its average is then the mean of its non-NaN values). Missing or skipped findings are NaN.
    """
    findings = list(findings)
    if AVERAGE_ROW in findings:
        raise ValueError(f"a finding may not be called {AVERAGE_ROW!r}: that is the table's average row")
    columns = {}
    for column, result in results.items():
        full_result = "per_finding" in result
        if full_result:
            aucs = {f: float(v["auc"]) for f, v in result["per_finding"].items()}
        else:
            aucs = {f: float(v) for f, v in result.items()}
        unknown = sorted(set(aucs) - set(findings))
        if unknown:
            raise ValueError(f"results[{column!r}] has findings not in the table: {unknown}")
        values = [aucs.get(f, math.nan) for f in findings]
        defined = [v for v in values if not math.isnan(v)]
        if full_result:
            average = float(result["macro_auc"])
        else:
            average = float(np.mean(defined)) if defined else math.nan
        columns[column] = values + [average]
    table = pd.DataFrame(columns, index=pd.Index(findings + [AVERAGE_ROW], name="finding"), dtype=float)
    return table


def format_markdown_table(df: pd.DataFrame, digits: int = 3, missing: str = "-") -> str:
    """A GitHub-flavoured markdown table of ``df`` (index as first column), numbers right-aligned."""

    def cell(value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            return missing if math.isnan(value) else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    header = [cell(df.index.name or "")] + [cell(c) for c in df.columns]
    rows = [[cell(i)] + [cell(v) for v in row] for i, row in zip(df.index, df.itertuples(index=False))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * len(df.columns)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    """NaN/inf become ``None`` (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    return value


def write_auc_tables(df: pd.DataFrame, out_dir: str | Path, stem: str = "auc") -> dict[str, Path]:
    """Write ``df`` as ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json``; returns ``{"md", "csv", "json"}`` paths.

    The JSON holds ``{"rows": [...], "columns": {column: {row: auc or null}}}``; the CSV leaves NaN empty.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
    paths["md"].write_text(format_markdown_table(df), encoding="utf-8")
    df.to_csv(paths["csv"], index_label=df.index.name or "finding")
    rows = [str(i) for i in df.index]
    payload = {"rows": rows, "columns": {str(c): dict(zip(rows, df[c].tolist())) for c in df.columns}}
    paths["json"].write_text(json.dumps(_json_safe(payload), indent=2) + "\n", encoding="utf-8")
    return paths


# ----------------------------------------------------------------------------------------------
# ROC plots
# ----------------------------------------------------------------------------------------------
def safe_file_stem(name: str) -> str:
    """``"Enlarged Cardiomediastinum"`` -> ``"enlarged_cardiomediastinum"``: letters, digits and ``_`` only."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    return stem or "finding"


def _new_figure(width: float, height: float):
    # A bare Figure with an Agg canvas: no pyplot global state, no backend switching for the caller.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _draw_roc(axes, fpr: np.ndarray, tpr: np.ndarray, title: str, stats: Mapping[str, Any], label: str) -> None:
    axes.plot(fpr, tpr, lw=1.5, label=f"{label} (AUC {stats['auc']:.3f})")
    axes.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.set_title(f"{title}\nn={stats['n']}, positives={stats['positives']}", fontsize=9)
    axes.set_xlabel("false positive rate", fontsize=8)
    axes.set_ylabel("true positive rate", fontsize=8)
    axes.legend(loc="lower right", fontsize=7)


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
    written paths, per-finding files first, the grid last.
    """
    findings = list(findings)
    result = per_finding_auc(y_true, y_score, findings)
    truth, scores = _as_float_array(y_true, "y_true"), _as_float_array(y_score, "y_score")
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
        figure = _new_figure(4.0, 4.0)
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
        figure = _new_figure(3.2 * cols, 3.2 * rows)
        for i, (finding, fpr, tpr) in enumerate(curves, start=1):
            _draw_roc(figure.add_subplot(rows, cols, i), fpr, tpr, finding, result["per_finding"][finding], label)
        figure.tight_layout()
        path = out / f"{prefix}all.png"
        figure.savefig(path, format="png")
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------
# the whole evaluation
# ----------------------------------------------------------------------------------------------
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
        "n_samples": int(_as_float_array(y_true, "y_true").shape[0]),
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
    summary = _json_safe(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


# ----------------------------------------------------------------------------------------------
# MONAI metric and Ignite handler
# ----------------------------------------------------------------------------------------------
class MacroAUC(CumulativeIterationMetric):
    """NaN-safe macro ROC-AUC over findings, for validation as a MONAI key metric.

    Accumulates ``y_pred`` (``B × N`` logits or probabilities) and ``y`` (``B × N`` labels, NaN =
    missing) over the iterations; :meth:`aggregate` gathers them across DDP ranks (MONAI's
    ``Cumulative`` buffers) and returns the mean AUC over the findings with both classes present,
    so it is never NaN while at least one finding can be scored; when none can, ``aggregate``
    raises a ``ValueError`` naming each finding and why (a NaN key metric would silently stop
    model selection). After ``aggregate``, ``per_finding`` holds each finding's AUC and
    ``skipped`` the findings left out with the reason.

    Args:
        findings: names of the N outputs (default ``"0"`` ... ``"N-1"``).
        label_threshold: when given, labels ``>= label_threshold`` count as positive and the rest
            negative (for soft targets such as the mean of label sets); otherwise labels must be 0/1/NaN.
    """

    def __init__(self, findings: Sequence[str] | None = None, label_threshold: float | None = None) -> None:
        super().__init__()
        self.findings = list(findings) if findings is not None else None
        self.label_threshold = label_threshold
        self.per_finding: dict[str, float] = {}
        self.skipped: dict[str, str] = {}

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if y is None:
            raise ValueError("MacroAUC needs labels y as well as predictions y_pred")
        if y_pred.ndim != 2 or y.shape != y_pred.shape:
            raise ValueError(
                f"MacroAUC expects y_pred and y of shape B x N, got {tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        # Stored as float so NaN (missing) labels survive the DDP all-gather.
        return y_pred.float(), y.float()

    def aggregate(self) -> float:  # type: ignore[override]
        """Macro AUC over the findings with both classes (NaN if none); updates ``per_finding`` and ``skipped``."""
        buffers = self.get_buffer()
        if buffers is None:
            raise ValueError("MacroAUC.aggregate() called before any (y_pred, y) batch was added")
        y_pred, y = buffers
        truth = y.cpu().numpy().astype(np.float64)
        if self.label_threshold is not None:
            truth = np.where(np.isnan(truth), np.nan, (truth >= self.label_threshold).astype(np.float64))
        finding_names = self.findings if self.findings is not None else [str(i) for i in range(truth.shape[1])]
        result = per_finding_auc(truth, y_pred.cpu().numpy(), finding_names, names=("MacroAUC labels y", "MacroAUC y_pred"))
        self.per_finding = {f: v["auc"] for f, v in result["per_finding"].items()}
        self.skipped = dict(result["skipped"])
        if result["n_scored"] == 0:
            raise ValueError(
                "MacroAUC: no finding can be scored, every one lacks labels or has a single class in the "
                f"validation labels ({describe_skipped(self.skipped)}); a macro AUC needs at least one finding "
                "with both positive and negative labels: add such items to the validation split"
            )
        return result["macro_auc"]


def describe_skipped(skipped: Mapping[str, str]) -> str:
    """``"Edema (no labels), Fracture (only negatives)"``: finding names and reasons, no patient data."""
    return ", ".join(f"{finding} ({reason})" for finding, reason in skipped.items())


class MacroAUCHandler(IgniteMetricHandler):
    """Ignite handler for :class:`MacroAUC`, shaped like ``monai.handlers.ROCAUC``.

    The findings skipped in an epoch (no labels or one class in the validation set) are logged
    once per epoch at INFO, names only, and kept in ``skipped``; ``per_finding`` holds the AUCs.

    Args:
        findings: names of the N outputs, for ``per_finding``/``skipped`` and the log line.
        label_threshold: see :class:`MacroAUC`.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
    """

    def __init__(
        self,
        findings: Sequence[str] | None = None,
        label_threshold: float | None = None,
        output_transform: Callable = lambda x: x,
    ) -> None:
        metric_fn = MacroAUC(findings=findings, label_threshold=label_threshold)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)

    @property
    def skipped(self) -> dict[str, str]:
        """Findings left out of the last computed macro AUC, with the reason."""
        return self.metric_fn.skipped  # type: ignore[attr-defined]

    @property
    def per_finding(self) -> dict[str, float]:
        """Each finding's AUC in the last computation (NaN for skipped ones)."""
        return self.metric_fn.per_finding  # type: ignore[attr-defined]

    def compute(self) -> Any:
        # Ignite calls compute once per epoch (EPOCH_COMPLETED), so this logs once per epoch.
        value = super().compute()
        if self.skipped:
            logger.info(
                "%s: %d finding(s) skipped, left out of the macro AUC (no labels or one class in validation): %s",
                self._name or "MacroAUC",
                len(self.skipped),
                describe_skipped(self.skipped),
            )
        return value


class PredictionCollector:
    """Ignite handler that gathers an evaluator's probabilities, clean labels and (optionally) the
    items' training label sets, so that :func:`evaluate_predictions` can score them at the end.

    Attach it to a MONAI ``SupervisedEvaluator`` with ``decollate=False``; predictions are logits
    and are stored as sigmoid probabilities.
    """

    def __init__(self, labels_key: str = "labels") -> None:
        self.labels_key = labels_key
        self.scores: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []
        self.label_sets: list[np.ndarray] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.__init__(self.labels_key))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        output = engine.state.output
        pred, label = output["pred"], output["label"]
        self.scores.append(torch.sigmoid(pred.detach().float()).cpu().numpy())
        self.truth.append(label.detach().float().cpu().numpy())
        sets = engine.state.batch.get(self.labels_key) if isinstance(engine.state.batch, dict) else None
        if sets is not None:
            self.label_sets.append(torch.as_tensor(sets).float().cpu().numpy())

    def write(
        self,
        findings: Sequence[str],
        out_dir: str | Path,
        label_set_names: Sequence[str] | None = None,
        model_name: str = "model",
        include_label_sets: bool = True,
    ) -> dict[str, Any]:
        """Score what was collected (see :func:`evaluate_predictions`) and write the tables and plots."""
        if not self.scores:
            raise RuntimeError("no predictions were collected: did the evaluator run on an empty dataset?")
        use_sets = include_label_sets and label_set_names and len(self.label_sets) == len(self.scores)
        return evaluate_predictions(
            np.concatenate(self.truth),
            np.concatenate(self.scores),
            list(findings),
            out_dir,
            label_sets=np.concatenate(self.label_sets) if use_sets else None,
            label_set_names=list(label_set_names) if use_sets else None,
            model_name=model_name,
        )
