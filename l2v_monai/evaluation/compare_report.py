"""The comparison of trained runs on the same hand-labelled items as ``compare.md``, ``compare.json`` and forest plots.

One table and one forest-plot PNG per pair (each run against the first): ΔAUC (later − first) per
finding and for the macro AUC with paired 95 % intervals, p-values and Holm-adjusted p-values.
Needs the ``[eval]`` extra (matplotlib).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from l2v_monai.evaluation.bootstrap import DEFAULT_RESAMPLES
from l2v_monai.evaluation.compare import compare_runs
from l2v_monai.evaluation.plots import safe_file_stem
from l2v_monai.evaluation.report_figures import plot_forest
from l2v_monai.evaluation.tables import json_safe
from l2v_monai.extras import import_extra

__all__ = ["comparison_report"]


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def comparison_report(
    y_true: Any,
    runs: Mapping[str, Any],
    findings: Sequence[str],
    out_dir: str | Path,
    groups: Sequence[Any] | None = None,
    patient_key: str | None = None,
    method: str = "delong",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    sources: Mapping[str, str] | None = None,
    hand_labels: str = "",
) -> dict[str, Any]:
    """Compare ``runs`` (``{name: B × N probabilities}``, same items) and write the report under ``out_dir``."""
    import_extra("matplotlib", "eval", "the comparison report (forest plots)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = compare_runs(y_true, runs, findings, groups, method, n_resamples, seed)
    boot = result["bootstrap"]
    unit = (f"whole patients ({boot['n_units']}, id `{patient_key}`)" if boot["unit"] == "patient"
            else f"single studies ({boot['n_units']}; no patient id on the items)")
    lines = [f"# Paired comparison on {len(next(iter(runs.values())))} hand-labelled items", ""]
    if hand_labels:
        lines += [f"Hand labels: `{hand_labels}`.", ""]
    for name in result["runs"]:
        lines.append(f"* `{name}`" + (f": `{sources[name]}`" if sources and name in sources else ""))
    lines += ["",
              f"ΔAUC = later run − `{result['reference']}`. Per finding: {result['method']}; macro AUC: paired percentile "
              f"bootstrap. Bootstrap: {boot['n_resamples']} resamples of {unit}, seed {boot['seed']}. "
              f"p-values are two-sided; Holm's correction across the findings of each pair.", ""]
    figures = []
    for pair in result["pairs"]:
        a, b = pair["run_a"], pair["run_b"]
        lines += [f"## {b} vs {a}", "",
                  f"| finding | positives / n | AUC {a} | AUC {b} | ΔAUC (95 %) | p | p (Holm) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        rows = []
        for f in findings:
            r = pair["per_finding"][f]
            if not r["estimable"]:
                lines.append(f"| {f} | {r['positives']} / {r['n']} | {r['reason']} | | | | |")
                continue
            lines.append(f"| {f} | {r['positives']} / {r['n']} | {r['auc_a']:.3f} | {r['auc_b']:.3f} | "
                         f"{r['difference']:+.3f} ({r['low']:+.3f} to {r['high']:+.3f}) | {_p(r['p_value'])} | {_p(r['p_holm'])} |")
            rows.append((f, r["difference"], r["low"], r["high"], f"p(Holm) {_p(r['p_holm'])}"))
        m = pair["macro"]
        if m["estimable"]:
            lines.append(f"| **Macro ({m['n_findings']} findings)** | | {m['auc_a']:.3f} | {m['auc_b']:.3f} | "
                         f"**{m['difference']:+.3f} ({m['low']:+.3f} to {m['high']:+.3f})** | {_p(m['p_value'])} | |")
            rows.append((f"Macro ({m['n_findings']})", m["difference"], m["low"], m["high"], f"p {_p(m['p_value'])}"))
        else:
            lines.append(f"| **Macro** | | {m['reason']} | | | | |")
        if rows:
            path = plot_forest(rows, out / f"forest_{safe_file_stem(b)}_vs_{safe_file_stem(a)}.png", f"ΔAUC: {b} − {a}")
            figures.append(str(path))
            lines += ["", f"![forest plot]({path.name})"]
        lines.append("")
    result["figures"] = figures
    result["sources"] = dict(sources or {})
    result = json_safe(result)
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "compare.md").write_text("\n".join(lines), encoding="utf-8")
    return result
