"""One report a clinician can act on, for one model on a hand-labelled set: ``report.md`` plus PNGs.

Sections: discrimination (n positive / n negative, ROC-AUC with bootstrap and DeLong intervals,
PR-AUC), calibration (Brier, ECE, reliability diagrams; before and after an optional local
recalibration, the "after" measured out of fold), operating points (thresholds for a rule,
sensitivity / specificity / PPV / NPV with intervals, measured away from the items that chose
them) and subgroups (AUC with intervals per metadata value, small ones flagged). The chosen
thresholds and the calibration maps can be saved as files inside the bundle, where inference
reads them. Needs the ``[eval]`` extra (matplotlib).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.bundle_scripts.decisions import calibrate, save_calibration, save_thresholds
from l2v_monai.evaluation.bootstrap import DEFAULT_RESAMPLES
from l2v_monai.evaluation.calibration import calibration_summary, fit_calibration
from l2v_monai.evaluation.intervals import auc_intervals, check_inputs, format_interval
from l2v_monai.evaluation.operating_points import DEFAULT_FOLDS, operating_points, parse_rule, thresholds_of
from l2v_monai.evaluation.report_figures import plot_reliability
from l2v_monai.evaluation.subgroups import subgroup_aucs
from l2v_monai.evaluation.tables import json_safe
from l2v_monai.extras import import_extra

__all__ = ["hospital_report", "cross_fitted_calibration"]


def _fold_of_items(n_items: int, groups: Sequence[Any] | None, n_folds: int, seed: int) -> np.ndarray:
    """A fold per item, whole patients in one fold (random assignment of patients to folds)."""
    ids = np.arange(n_items) if groups is None else np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1]
    n_groups = int(ids.max()) + 1 if n_items else 0
    fold_of_group = np.random.default_rng(seed).permutation(n_groups) % n_folds
    return fold_of_group[ids]


def cross_fitted_calibration(
    y_true: np.ndarray, y_prob: np.ndarray, findings: Sequence[str], method: str,
    groups: Sequence[Any] | None = None, n_folds: int = DEFAULT_FOLDS, seed: int = 0,
) -> np.ndarray:
    """Each item's probabilities recalibrated by a map fitted on the other folds: an honest "after"."""
    fold = _fold_of_items(y_true.shape[0], groups, n_folds, seed)
    out = np.array(y_prob, dtype=np.float64)
    for k in range(n_folds):
        held = fold == k
        if not held.any() or held.all():
            continue
        document = fit_calibration(y_true[~held], y_prob[~held], findings, method)
        out[held] = calibrate(document, y_prob[held])
    return out


def _pct(rate: Mapping[str, Any]) -> str:
    if rate["n"] == 0 or rate["value"] is None or math.isnan(rate["value"]):
        return "— (0 items)"
    return f"{rate['value']:.2f} ({rate['low']:.2f}–{rate['high']:.2f}) [{rate['k']}/{rate['n']}]"


def _discrimination_md(result: Mapping[str, Any], findings: Sequence[str]) -> list[str]:
    lines = ["| finding | positives / negatives | ROC-AUC (95 % bootstrap) | DeLong 95 % | PR-AUC (AP) | prevalence |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for f in findings:
        r = result["per_finding"][f]
        counts = f"{r['positives']} / {r['negatives']}"
        if not r["estimable"]:
            lines.append(f"| {f} | {counts} | {r['reason']} | — | — | — |")
            continue
        lines.append(f"| {f} | {counts} | {format_interval(r['auc'], r['auc_low'], r['auc_high'])} | "
                     f"{r['delong_low']:.3f}–{r['delong_high']:.3f} | {r['ap']:.3f} | {r['prevalence']:.2f} |")
    m = result["macro"]
    if m["estimable"]:
        lines.append(f"| **Macro ({m['n_findings']} findings)** | | **{format_interval(m['auc'], m['auc_low'], m['auc_high'])}** | "
                     f"— | {m['ap']:.3f} | |")
    else:
        lines.append(f"| **Macro** | | {m['reason']} | | | |")
    return lines


def hospital_report(
    y_true: Any,
    y_prob: Any,
    findings: Sequence[str],
    out_dir: str | Path,
    model_name: str = "model",
    groups: Sequence[Any] | None = None,
    patient_key: str | None = None,
    metadata: Mapping[str, Sequence[str]] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    operating_point: str | None = None,
    tuning_y_true: Any = None,
    tuning_y_prob: Any = None,
    n_folds: int = DEFAULT_FOLDS,
    recalibrate: str | None = None,
    thresholds_path: str | Path | None = None,
    calibration_path: str | Path | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and ``reliability/*.png`` under ``out_dir``; optionally save decisions.

    ``y_prob`` are the network's probabilities as inference writes them. With ``recalibrate``
    (``platt``, ``temperature`` or ``isotonic``) a map is fitted on all hand-labelled items and,
    with ``calibration_path``, saved; thresholds (``operating_point`` such as ``"sensitivity=0.9"``)
    are then chosen on the recalibrated probabilities, which is what inference will threshold, and
    saved to ``thresholds_path``. With ``tuning_y_true`` / ``tuning_y_prob`` (other hand-labelled
    items) the thresholds are chosen on those and measured on these; otherwise by cross-fitting
    within these. Returns the report as JSON-safe data.
    """
    import_extra("matplotlib", "eval", "the evaluation report")
    findings = list(findings)
    truth, probs = check_inputs(y_true, y_prob, findings, score_name="probabilities")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"model": model_name, "n_items": int(truth.shape[0]), "findings": findings,
                              "source": source, "patient_key": patient_key}

    report["discrimination"] = auc_intervals(truth, probs, findings, groups, n_resamples, seed)
    report["calibration"] = {"as_trained": calibration_summary(truth, probs, findings)}
    figures: dict[str, Any] = {}
    used = probs
    if recalibrate:
        document = fit_calibration(truth, probs, findings, recalibrate)
        after = cross_fitted_calibration(truth, probs, findings, recalibrate, groups, n_folds, seed)
        report["calibration"].update(method=recalibrate, recalibrated_out_of_fold=calibration_summary(truth, after, findings),
                                     skipped=document["skipped"], n_folds=n_folds)
        if calibration_path:
            report["calibration"]["saved_to"] = str(save_calibration(
                calibration_path, findings, recalibrate, document["maps"], fitted_on=document["fitted_on"], model=model_name))
        used = calibrate(document, probs)
    figures["reliability"] = [str(p) for p in plot_reliability(
        report["calibration"]["as_trained"], out / "reliability", report["calibration"].get("recalibrated_out_of_fold"))]

    if operating_point:
        rule, target = parse_rule(operating_point)
        if tuning_y_true is not None:
            tune_truth, tune_probs = check_inputs(tuning_y_true, tuning_y_prob, findings, score_name="tuning probabilities")
            if recalibrate:
                tune_probs = calibrate(document, tune_probs)
            mask = np.r_[np.ones(tune_truth.shape[0], dtype=bool), np.zeros(truth.shape[0], dtype=bool)]
            points = operating_points(np.vstack([tune_truth, truth]), np.vstack([tune_probs, used]), findings, rule, target,
                                      mask, n_folds, None, seed)
        else:
            points = operating_points(truth, used, findings, rule, target, None, n_folds, groups, seed)
        report["operating_points"] = points
        if thresholds_path:
            points["saved_to"] = str(save_thresholds(
                thresholds_path, findings, thresholds_of(points), rule=rule, target=target, scheme=points["scheme"],
                on="recalibrated probabilities" if recalibrate else "probabilities", model=model_name))
    if metadata:
        report["subgroups"] = subgroup_aucs(truth, probs, findings, metadata, groups, n_resamples, seed)
    report["figures"] = figures
    report = json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report, out), encoding="utf-8")
    return report


def _markdown(report: Mapping[str, Any], out: Path) -> str:
    findings = report["findings"]
    d = report["discrimination"]
    boot = d["bootstrap"]
    lines = [f"# Evaluation of {report['model']} on {report['n_items']} hand-labelled items", ""]
    if report["source"]:
        lines += [f"Hand labels: `{report['source']}`.", ""]
    unit = (f"whole patients ({boot['n_units']} patients, id `{report['patient_key']}`)" if boot["unit"] == "patient"
            else f"single studies ({boot['n_units']}; no patient id on the items)")
    lines += [
        "## Discrimination", "",
        f"95 % intervals: percentile bootstrap, {boot['n_resamples']} resamples of {unit}, seed {boot['seed']}; "
        "DeLong's interval as a cross-check. PR-AUC is average precision; it depends on prevalence. "
        "A finding without both positives and negatives among the labelled items is not estimable.", "",
        *_discrimination_md(d, findings), "",
    ]
    if (out / "roc" / "roc_all.png").is_file():  # written beside this report by evaluate_predictions
        lines += ["ROC curves: [all findings](roc/roc_all.png), one PNG per finding in `roc/`.", ""]
    cal = report["calibration"]
    lines += ["## Calibration", "",
              "Brier score (lower is better) and expected calibration error (ECE, 10 equal-width bins)."]
    if cal.get("method"):
        lines += [f"Recalibration: **{cal['method']}**, fitted on these hand labels; the *after* figures are out of fold "
                  f"({cal['n_folds']}-fold cross-fitting), so they are not measured on the items that fitted the map."
                  + (f" Saved to `{cal['saved_to']}`; inference applies it." if cal.get("saved_to") else "")]
    lines += [""]
    header = "| finding | Brier | ECE |" + (" Brier after | ECE after |" if cal.get("method") else "")
    lines += [header, "| --- | ---: | ---: |" + (" ---: | ---: |" if cal.get("method") else "")]
    for f in findings:
        before = cal["as_trained"][f]
        if not before["estimable"]:
            lines.append(f"| {f} | {before['reason']} | |" + (" | |" if cal.get("method") else ""))
            continue
        row = f"| {f} | {before['brier']:.4f} | {before['ece']:.4f} |"
        if cal.get("method"):
            after = cal["recalibrated_out_of_fold"][f]
            row += f" {after['brier']:.4f} | {after['ece']:.4f} |" if after["estimable"] else " — | — |"
        lines.append(row)
    if report["figures"]["reliability"]:
        lines += ["", "Reliability diagrams: " + ", ".join(
            f"[{Path(p).stem.replace('reliability_', '')}]({Path(p).relative_to(out)})" for p in report["figures"]["reliability"])]
    lines += [""]
    if "operating_points" in report:
        op = report["operating_points"]
        scheme = op["scheme"]
        how = (f"chosen on a tuning split ({scheme['n_tuning']} items) and measured on the other {scheme['n_measured']}"
               if scheme["kind"] == "tuning split" else
               f"measured by {scheme['n_folds']}-fold cross-fitting (each fold's calls come from a threshold chosen on the "
               f"other folds; folds keep each {scheme['grouped_by']} together); the saved threshold is chosen on all items")
        target = "" if op["target"] is None else f" = {op['target']}"
        lines += ["## Operating points", "",
                  f"Rule: **{op['rule']}{target}**, {how}. Figures: value (95 % Wilson interval) [count]; PPV and NPV hold "
                  "at this set's prevalence." + (f" Thresholds saved to `{op['saved_to']}`; inference writes a 0/1 call per "
                                                 "finding beside each probability." if op.get("saved_to") else ""), "",
                  "| finding | threshold | sensitivity | specificity | PPV | NPV | sensitivity where chosen |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for f in findings:
            r = op["per_finding"][f]
            if r["threshold"] is None:
                lines.append(f"| {f} | {r['reason']} | | | | | |")
                continue
            m = r["measured"]
            lines.append(f"| {f} | {r['threshold']:.4f} | {_pct(m['sensitivity'])} | {_pct(m['specificity'])} | "
                         f"{_pct(m['ppv'])} | {_pct(m['npv'])} | {r['on_tuning']['sensitivity']['value']:.2f} |")
        lines += [""]
    if "subgroups" in report:
        lines += ["## Subgroups", "",
                  "Macro ROC-AUC per subgroup with its 95 % bootstrap interval; every subgroup is shown. "
                  "⚠ marks a small one: a finding with fewer than 10 positives or negatives, or none estimable.", "",
                  "| column | value | items | macro ROC-AUC (95 %) | findings estimable | flag |",
                  "| --- | --- | ---: | ---: | ---: | --- |"]
        for column, values in report["subgroups"].items():
            for value, g in values.items():
                m = g["macro"]
                auc = format_interval(m.get("auc"), m.get("auc_low"), m.get("auc_high")) if m["estimable"] else m["reason"]
                flag = "⚠ small" + (f": {', '.join(g['small_findings'])}" if g["small_findings"] else "") if g["small"] else ""
                lines.append(f"| {column} | {value} | {g['n_items']} | {auc} | {m['n_findings']} | {flag} |")
        lines += [""]
    return "\n".join(lines)
