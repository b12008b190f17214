"""AUC tables: one column per model or label set, one row per finding plus ``Average``; as
markdown, CSV and JSON. Needs pandas, from the ``[eval]`` extra, imported when a table is built.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from l2v_monai.extras import import_extra

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AVERAGE_ROW", "auc_table", "format_markdown_table", "write_auc_tables", "json_safe"]

AVERAGE_ROW = "Average"


def auc_table(results: Mapping[str, Mapping[str, Any]], findings: Sequence[str]) -> pd.DataFrame:
    """One column per model / label set, one row per finding plus an ``"Average"`` row.

    Each value of ``results`` is a :func:`~l2v_monai.evaluation.auc.per_finding_auc` result, or a
    plain ``{finding: auc}`` mapping (its average is then the mean of its non-NaN values). Missing or
    skipped findings are NaN. Needs the ``[eval]`` extra (pandas).
    """
    pandas = import_extra("pandas", "eval", "AUC tables (auc_table)")
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
    return pandas.DataFrame(columns, index=pandas.Index(findings + [AVERAGE_ROW], name="finding"), dtype=float)


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


def json_safe(value: Any) -> Any:
    """NaN/inf become ``None`` (JSON has no NaN); numpy scalars become Python numbers; paths strings."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
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
    paths["json"].write_text(json.dumps(json_safe(payload), indent=2) + "\n", encoding="utf-8")
    return paths
