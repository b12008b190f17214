"""How good is each label set, per finding, before anyone hand-labels an image?

Four parts, one concept (each label set's sensitivity, specificity and prevalence per finding):

* **Estimated without hand labels.** Dawid–Skene (1979), fitted with crowd-kit once per finding on
  the binary labels of all sets together, gives every set a 2 × 2 confusion matrix (its
  sensitivity ``P(set says 1 | y = 1)`` and specificity ``P(set says 0 | y = 0)``), the finding's
  prevalence ``P(y = 1)`` and each item's posterior ``P(y = 1 | labels)``. It assumes the sets err
  independently given the truth and are better than chance; sets built from one labeler (its
  uncertain → 0 and uncertain → 1 mappings) break the first assumption.
* **Estimated from a trained run's vote, where one exists.** The run's refined labels ȳ
  (:mod:`l2v_monai.engine.run_outputs`) taken as ``P(y = 1)`` give every set a second sensitivity and
  specificity, and the vote's weights show how much it trusted each set per finding.
* **Measured against hand labels, where some exist.** True positives over positives and true
  negatives over negatives, with 95 % Wilson intervals, and whether the estimate lies inside. Hand
  labels are rarely a random sample (on OpenI, MeSH negatives are only the reports tagged
  ``normal``), so the estimate is also given *on the hand-labelled items*: Dawid–Skene's posterior,
  not the hand labels, weighs those items (it uses which items were hand-labelled, never their
  values). When the two estimates differ, the population differs.
* **Disagreement.** Per finding, the fraction of items on which the sets that label it disagree,
  and every pair's disagreement rate.

:func:`quality_report` returns one JSON-ready dict; :func:`write_report` writes it as markdown,
CSV (one row per set × finding, :data:`CSV_COLUMNS`), PNG heatmaps and JSON. The measured
sensitivity and specificity come from :func:`l2v_monai.labelers.against_truth.finding_quality`, the same
function the labelers' MeSH table uses. Nothing here reads or writes item text or ids.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.strategies.dawid_skene import BinaryFit, binarize, fit_binary
from l2v_monai.labelers.against_truth import MIN_POSITIVES, finding_quality

__all__ = [
    "CSV_COLUMNS",
    "DawidSkeneQuality",
    "Z_95",
    "disagreement",
    "estimate_error",
    "estimate_quality",
    "markdown_report",
    "plot_quality",
    "posterior_quality",
    "quality_inputs_from_datalist",
    "quality_report",
    "wilson_interval",
    "write_csv",
    "write_report",
]

#: The standard normal quantile for a two-sided 95 % interval.
Z_95 = 1.959963984540054

#: One CSV row per label set × finding, in this column order.
CSV_COLUMNS: tuple[str, ...] = (
    "label_set", "finding",
    "est_sensitivity", "est_specificity", "est_prevalence", "set_positive_rate",
    "items", "disagreement",
    "hand_positives", "true_positives", "sensitivity", "sensitivity_low", "sensitivity_high", "sensitivity_inside",
    "hand_negatives", "true_negatives", "specificity", "specificity_low", "specificity_high", "specificity_inside",
    "est_sensitivity_on_hand", "est_specificity_on_hand", "in_error",
    "est_sensitivity_vote", "est_specificity_vote", "vote_weight",
)


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for ``successes / trials`` (NaNs when ``trials`` is 0).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or ``trials``
    successes, where hand-label counts of rare findings often sit.
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return math.nan, math.nan
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / trials + z2 / (4 * trials * trials))
    # At 0 or `trials` successes the interval ends exactly at 0 or 1; say so rather than trust rounding.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


#: Dawid–Skene's per-finding fit (:class:`l2v_monai.strategies.dawid_skene.BinaryFit`), under the name this report gives it.
DawidSkeneQuality = BinaryFit


def _check_sets(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 3:
        raise ValueError(f"label sets must be items × sets × findings, got shape {labels.shape}")
    return binarize(labels)


def estimate_quality(labels: np.ndarray, n_iter: int = 100, tol: float = 1e-5) -> DawidSkeneQuality:
    """Binary Dawid–Skene per finding on ``labels`` (S × M × N, NaN = no label): see
    :func:`l2v_monai.strategies.dawid_skene.fit_binary`, which the ``dawid_skene`` strategy fits too."""
    return fit_binary(labels, n_iter=n_iter, tol=tol)


def posterior_quality(labels: np.ndarray, posterior: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity (M × N) that ``posterior`` (S × N) implies on the ``items`` (S × N mask).

    ``Σ q·[set = 1] / Σ q`` and ``Σ (1 − q)·[set = 0] / Σ (1 − q)`` over the masked items a set
    labels, ``q`` = P(y = 1). With ``items`` = the hand-labelled entries this is the estimate for the
    population the hand labels measure, using which items were hand-labelled but not their values.
    """
    labels = _check_sets(labels)
    posterior = np.asarray(posterior, dtype=np.float64)
    items = np.asarray(items, dtype=bool)
    if posterior.shape != (labels.shape[0], labels.shape[2]) or items.shape != posterior.shape:
        raise ValueError(
            f"posterior {posterior.shape} and items {items.shape} must both be {labels.shape[0]} items × {labels.shape[2]} findings"
        )
    use = items[:, None, :] & ~np.isnan(labels) & ~np.isnan(posterior)[:, None, :]
    q = np.nan_to_num(posterior)[:, None, :]
    says = np.nan_to_num(labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (use * q * says).sum(0) / (use * q).sum(0)
        specificity = (use * (1 - q) * (1 - says)).sum(0) / (use * (1 - q)).sum(0)
    return sensitivity, specificity


def disagreement(labels: np.ndarray, set_names: Sequence[str], findings: Sequence[str]) -> dict[str, Any]:
    """How often the sets disagree: per finding (over items that at least two sets label) and per pair.

    Returns ``{"any_finding": fraction of items where the sets differ on some finding,
    "findings": {finding: {"items", "fraction", "pairs": [{"sets", "items", "fraction"}, ...]}}}``
    with each finding's pairs sorted from the most to the least disagreeing. NaN (no label) never
    counts as a disagreement.
    """
    labels = _check_sets(labels)
    known = ~np.isnan(labels)
    high, low = np.nanmax(np.where(known, labels, -np.inf), axis=1), np.nanmin(np.where(known, labels, np.inf), axis=1)
    compared = known.sum(1) >= 2  # S × N
    differs = compared & (high != low)
    out: dict[str, Any] = {"any_finding": float(differs.any(1).mean()) if len(labels) else math.nan, "findings": {}}
    for j, finding in enumerate(findings):
        pairs = []
        for a, b in combinations(range(len(set_names)), 2):
            both = known[:, a, j] & known[:, b, j]
            count = int(both.sum())
            rate = float((labels[both, a, j] != labels[both, b, j]).mean()) if count else math.nan
            pairs.append({"sets": [set_names[a], set_names[b]], "items": count, "fraction": rate})
        pairs.sort(key=lambda p: -p["fraction"] if p["fraction"] == p["fraction"] else math.inf)
        n_compared = int(compared[:, j].sum())
        out["findings"][finding] = {
            "items": n_compared,
            "fraction": float(differs[:, j].sum() / n_compared) if n_compared else math.nan,
            "pairs": pairs,
        }
    return out


def _inside(estimate: float, low: float, high: float) -> bool | None:
    if any(math.isnan(x) for x in (estimate, low, high)):
        return None
    return bool(low <= estimate <= high)


def _float(x: Any) -> float | None:
    """JSON-safe number: NaN → None."""
    x = float(x)
    return None if math.isnan(x) else x


def quality_report(
    labels: np.ndarray,
    set_names: Sequence[str],
    findings: Sequence[str],
    truth: np.ndarray | None = None,
    min_positives: int = MIN_POSITIVES,
    truth_name: str = "hand labels",
    n_iter: int = 100,
    vote: np.ndarray | None = None,
    vote_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """Estimated (and, given ``truth``: S × N, 1/0/NaN, measured) quality of every set × finding.

    Keys: ``items``, ``label_sets``, ``findings``, ``truth`` (name, or None), ``min_positives``,
    ``prevalence`` (finding → estimate), ``disagreement`` (:func:`disagreement`), ``rows`` (one per
    set × finding, :data:`CSV_COLUMNS`, NaN as None) and, with ``truth``, ``error``
    (:func:`estimate_error` over the findings with ≥ ``min_positives`` truth positives).

    Given a trained run's ``vote`` (its soft refined labels ȳ, S × N, :mod:`l2v_monai.engine.run_outputs`),
    each set's sensitivity and specificity are estimated a second way, with ȳ as ``P(y = 1)``
    (:func:`posterior_quality` over every item; ``est_*_vote``), and ``vote_prevalence`` is the mean
    ȳ. ``vote_weights`` (S × M × N, NaN where a set has no label) give ``vote_weight``: the mean
    weight the vote gave the set on the entries that at least two sets label (1/M = no preference).
    With ``truth`` too, ``error_vote`` scores these estimates.
    """
    labels = _check_sets(labels)
    s, m, n = labels.shape
    if m != len(set_names) or n != len(findings):
        raise ValueError(f"label sets have shape {labels.shape}, expected items × {len(set_names)} sets × {len(findings)} findings")
    if len(set(set_names)) != m:
        raise ValueError(f"label-set names repeat: {list(set_names)}")
    if truth is not None:
        truth = binarize(truth)
        if truth.shape != (s, n):
            raise ValueError(f"truth has shape {truth.shape}, expected {s} items × {n} findings")
    if vote is not None:
        vote = np.asarray(vote, dtype=np.float64)
        if vote.shape != (s, n):
            raise ValueError(f"the vote's refined labels have shape {vote.shape}, expected {s} items × {n} findings")
    if vote_weights is not None:
        if vote is None:
            raise ValueError("vote_weights need the vote's refined labels (vote) too")
        vote_weights = np.asarray(vote_weights, dtype=np.float64)
        if vote_weights.shape != (s, m, n):
            raise ValueError(f"the vote's weights have shape {vote_weights.shape}, expected {s} items × {m} sets × {n} findings")
    fit = estimate_quality(labels, n_iter=n_iter)
    agree = disagreement(labels, set_names, findings)
    if vote is not None:
        vote_sens, vote_spec = posterior_quality(labels, vote, np.ones((s, n), dtype=bool))
    if vote_weights is not None:
        # Where only one set labels an entry its weight is 1 by construction: average where the vote chose.
        chosen = ((~np.isnan(labels)).sum(1) >= 2)[:, None, :] & ~np.isnan(vote_weights)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_weight = np.where(chosen, vote_weights, 0.0).sum(0) / chosen.sum(0)
    if truth is not None:
        on_sens, on_spec = posterior_quality(labels, fit.posterior, ~np.isnan(truth))
    rows: list[dict[str, Any]] = []
    for k, name in enumerate(set_names):
        for j, finding in enumerate(findings):
            said = labels[:, k, j]
            row: dict[str, Any] = {column: None for column in CSV_COLUMNS}
            row.update(
                label_set=name, finding=finding,
                est_sensitivity=_float(fit.sensitivity[k, j]), est_specificity=_float(fit.specificity[k, j]),
                est_prevalence=_float(fit.prevalence[j]),
                set_positive_rate=_float(np.nanmean(said)) if (~np.isnan(said)).any() else None,
                items=int((~np.isnan(said)).sum()), disagreement=_float(agree["findings"][finding]["fraction"]),
            )
            if vote is not None:
                row.update(est_sensitivity_vote=_float(vote_sens[k, j]), est_specificity_vote=_float(vote_spec[k, j]))
            if vote_weights is not None:
                row.update(vote_weight=_float(mean_weight[k, j]))
            if truth is not None:
                # Score the set only where it has a label: a missing label is not a negative call.
                measured = finding_quality(np.nan_to_num(said), np.where(np.isnan(said), np.nan, truth[:, j]))
                pos, neg = int(measured["positives"]), int(measured["negatives"])
                # finding_quality gives rates; the counts behind them are exact integers.
                tp = int(round(measured["sensitivity"] * pos)) if pos else 0
                tn = int(round(measured["specificity"] * neg)) if neg else 0
                sens_ci, spec_ci = wilson_interval(tp, pos), wilson_interval(tn, neg)
                row.update(
                    hand_positives=pos, true_positives=tp, sensitivity=_float(measured["sensitivity"]),
                    sensitivity_low=_float(sens_ci[0]), sensitivity_high=_float(sens_ci[1]),
                    sensitivity_inside=_inside(fit.sensitivity[k, j], *sens_ci),
                    hand_negatives=neg, true_negatives=tn, specificity=_float(measured["specificity"]),
                    specificity_low=_float(spec_ci[0]), specificity_high=_float(spec_ci[1]),
                    specificity_inside=_inside(fit.specificity[k, j], *spec_ci),
                    est_sensitivity_on_hand=_float(on_sens[k, j]), est_specificity_on_hand=_float(on_spec[k, j]),
                    in_error=int((truth[:, j] == 1).sum()) >= min_positives,
                )
            rows.append(row)
    report: dict[str, Any] = {
        "items": s,
        "label_sets": list(set_names),
        "findings": list(findings),
        "truth": truth_name if truth is not None else None,
        "min_positives": min_positives,
        "prevalence": {f: _float(fit.prevalence[j]) for j, f in enumerate(findings)},
        "disagreement": agree,
        "rows": rows,
        "vote": None,
    }
    if vote is not None:
        report["vote"] = {
            "weights": vote_weights is not None,
            "prevalence": {f: _float(np.nanmean(vote[:, j])) if (~np.isnan(vote[:, j])).any() else None
                           for j, f in enumerate(findings)},
        }
    if truth is not None:
        report["truth_positives"] = {f: int((truth[:, j] == 1).sum()) for j, f in enumerate(findings)}
        report["truth_negatives"] = {f: int((truth[:, j] == 0).sum()) for j, f in enumerate(findings)}
        # What Dawid–Skene's own decision (posterior ≥ 0.5) calls positive, against the truth: where the
        # latent class it infers and the truth's notion of a positive part ways.
        called = fit.posterior >= 0.5
        report["posterior_positives"] = {
            f: {"items": int(called[:, j].sum()), "truth_positive": int((called[:, j] & (truth[:, j] == 1)).sum()),
                "truth_negative": int((called[:, j] & (truth[:, j] == 0)).sum()),
                "unlabelled": int((called[:, j] & np.isnan(truth[:, j])).sum())}
            for j, f in enumerate(findings)
        }
        report["error"] = estimate_error(report)
        report["error_on_hand"] = estimate_error(report, estimate="on_hand")
        if vote is not None:
            report["error_vote"] = estimate_error(report, estimate="vote")
    return report


def estimate_error(
    report: Mapping[str, Any], findings: Sequence[str] | None = None, estimate: str = "population"
) -> dict[str, Any]:
    """Mean absolute error of the estimates against the measured values, per set, per finding and overall.

    ``findings`` defaults to those with ≥ ``min_positives`` truth positives (``in_error``);
    ``estimate`` is ``"population"`` (Dawid–Skene's rates over all items), ``"on_hand"``
    (:func:`posterior_quality` on the hand-labelled items) or ``"vote"`` (a trained run's refined
    labels as the posterior). Pairs where either value is undefined are left out. Also counts how
    many estimates lie inside the measured 95 % interval.
    """
    suffixes = {"population": "", "on_hand": "_on_hand", "vote": "_vote"}
    if estimate not in suffixes:
        raise ValueError(f"estimate must be one of {sorted(suffixes)}, got {estimate!r}")
    suffix = suffixes[estimate]
    wanted = (lambda r: r["finding"] in findings) if findings is not None else (lambda r: bool(r.get("in_error")))
    chosen = [r for r in report["rows"] if wanted(r)]

    def errors(rows: list[dict[str, Any]], metric: str) -> list[float]:
        return [abs(r[f"est_{metric}{suffix}"] - r[metric]) for r in rows
                if r.get(f"est_{metric}{suffix}") is not None and r.get(metric) is not None]

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        sens, spec = errors(rows, "sensitivity"), errors(rows, "specificity")
        inside = [_inside(*(math.nan if r.get(k) is None else r[k] for k in (f"est_{metric}{suffix}", f"{metric}_low", f"{metric}_high")))
                  for r in rows for metric in ("sensitivity", "specificity")]
        inside = [x for x in inside if x is not None]
        mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731 (a local one-liner)
        return {"sensitivity_mae": mean(sens), "specificity_mae": mean(spec), "mae": mean(sens + spec),
                "pairs": len(sens) + len(spec), "inside_ci": sum(inside), "with_ci": len(inside)}

    used = list(dict.fromkeys(r["finding"] for r in chosen))
    return {
        "estimate": estimate,
        "findings": used,
        "overall": summary(chosen),
        "sets": {name: summary([r for r in chosen if r["label_set"] == name]) for name in report["label_sets"]},
        "per_finding": {f: summary([r for r in chosen if r["finding"] == f]) for f in used},
    }


# ------------------------------------------------------------------------------------------------
# Inputs: a datalist's label sets and, where they exist, its hand labels
# ------------------------------------------------------------------------------------------------
def _hand_label(item: Mapping[str, Any], n: int, where: str) -> np.ndarray | None:
    """An item's hand label as N values (1/0/NaN), from ``label`` (N) or ``clean`` (N, or a class index)."""
    from l2v_monai.labels import label_array

    if item.get("label") is not None:
        return label_array(item, where, "label", (n,))
    clean = item.get("clean")
    if clean is None:
        return None
    if isinstance(clean, (int, np.integer)) and not isinstance(clean, bool):
        if not 0 <= int(clean) < n:
            raise ValueError(f"{where}: 'clean' class {int(clean)} is outside 0..{n - 1}")
        return np.eye(n, dtype=np.float32)[int(clean)]
    return label_array(item, where, "clean", (n,))


def quality_inputs_from_datalist(
    path: str | Path,
    split: str = "training",
    label_sets: Sequence[str] | None = None,
    hand_datalist: str | Path | None = None,
) -> tuple[np.ndarray, list[str], list[str], np.ndarray | None]:
    """``(labels S × M × N, set names, findings, hand labels S × N or None)`` from a datalist.

    Hand labels are the ``label`` (or ``clean``) field of the split's items, or the ``label`` of a
    second datalist's items (any split) matched by image path. Errors name the file and the item.
    """
    from l2v_monai.data.datalist import DatalistSourceError, read_split_label_sets
    from l2v_monai.labels import LabelValueError, describe_item

    path = Path(path)
    items, labels, names, findings = read_split_label_sets(path, split, label_sets)
    hand = np.full((len(items), len(findings)), np.nan, dtype=np.float32)
    found = False
    for index, item in enumerate(items):
        try:
            value = _hand_label(item, len(findings), describe_item(split, index, item))
        except (LabelValueError, ValueError) as error:
            raise DatalistSourceError(path, str(error)) from None
        if value is not None:
            hand[index], found = value, True
    if hand_datalist is not None:
        found = _join_hand_datalist(Path(hand_datalist), items, findings, hand) or found
    return labels, names, findings, hand if found else None


def _join_hand_datalist(path: Path, items: Sequence[Mapping[str, Any]], findings: Sequence[str], hand: np.ndarray) -> bool:
    """Fill ``hand`` from ``path``'s items that carry ``label``, matched to ``items`` by resolved image path."""
    from l2v_monai.data.datalist import SPLITS, DatalistSourceError, read_datalist
    from l2v_monai.labels import LabelValueError, describe_item

    other = read_datalist(path, splits=SPLITS)
    if other["findings"] and list(other["findings"]) != list(findings):
        raise DatalistSourceError(path, f"its findings {other['findings']} differ from the label sets' {list(findings)}")
    row_of = {str(Path(item["image"]).resolve()): i for i, item in enumerate(items) if isinstance(item.get("image"), str)}
    found = False
    for split in SPLITS:
        for index, item in enumerate(other[split]):
            where = describe_item(split, index, item)
            try:
                value = _hand_label(item, len(findings), where)
            except (LabelValueError, ValueError) as error:
                raise DatalistSourceError(path, str(error)) from None
            if value is None:
                continue
            row = row_of.get(str(Path(str(item.get("image"))).resolve()))
            if row is None:
                raise DatalistSourceError(path, f"{where}: this hand-labelled image is not among the label sets' items")
            hand[row], found = value, True
    if not found:
        raise DatalistSourceError(path, "holds no item with a 'label' (or 'clean') hand label")
    return found


# ------------------------------------------------------------------------------------------------
# Outputs: markdown, CSV, PNG, JSON
# ------------------------------------------------------------------------------------------------
def _fmt(x: Any, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f} %"


def markdown_report(report: Mapping[str, Any], title: str = "Label-set quality", command: str | None = None) -> str:
    """The report as markdown: estimates (findings × sets), disagreement, and with a truth its error and detail."""
    sets, findings = report["label_sets"], report["findings"]
    row = {(r["label_set"], r["finding"]): r for r in report["rows"]}
    truth = report.get("truth")
    lines = [f"# {title}", ""]
    lines.append(
        f"{report['items']} items, {len(sets)} label sets ({', '.join(sets)}), {len(findings)} findings. "
        f"The sets disagree on at least one finding for {_pct(report['disagreement']['any_finding'])} of the items."
        + (f" Truth for the measured values: {truth}." if truth else " No hand labels: estimates only.")
    )
    if command:
        lines += ["", "Produced by:", "", f"    {command}"]
    lines += ["", "## Estimated from the label sets alone", "",
              "Dawid–Skene, fitted per finding on all the sets together (crowd-kit). Each cell: estimated "
              "sensitivity / specificity of the set.", "",
              "| finding | est. prevalence | sets disagree | " + " | ".join(sets) + " |",
              "|---|---:|---:|" + "---:|" * len(sets)]
    for f in findings:
        cells = [f"{_fmt(row[s, f]['est_sensitivity'], 2)} / {_fmt(row[s, f]['est_specificity'])}" for s in sets]
        lines.append(f"| {f} | {_fmt(report['prevalence'][f])} | {_pct(report['disagreement']['findings'][f]['fraction'])} | "
                     + " | ".join(cells) + " |")
    if report.get("vote"):
        lines += _markdown_vote(report, row)
    lines += ["", "## Disagreement per finding", "",
              "Over the items that at least two sets label; a pair's rate is over the items both label.", "",
              "| finding | items | sets disagree | most-disagreeing pair | its rate | least-disagreeing pair | its rate |",
              "|---|---:|---:|---|---:|---|---:|"]
    for f in findings:
        d = report["disagreement"]["findings"][f]
        pairs = [p for p in d["pairs"] if p["fraction"] == p["fraction"]]
        most, least = (pairs[0], pairs[-1]) if pairs else (None, None)
        name = lambda p: " vs ".join(p["sets"]) if p else "—"  # noqa: E731
        lines.append(f"| {f} | {d['items']} | {_pct(d['fraction'])} | {name(most)} | {_pct(most and most['fraction'])} | "
                     f"{name(least)} | {_pct(least and least['fraction'])} |")
    if truth:
        lines += _markdown_measured(report, row)
    return "\n".join(lines) + "\n"


def _markdown_vote(report: Mapping[str, Any], row: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[str]:
    sets, findings, weights = report["label_sets"], report["findings"], report["vote"]["weights"]
    lines = ["", "## Estimated from the trained run's vote", "",
             "The run's refined labels ȳ, recomputed over these items, taken as P(y = 1): each cell gives the set's "
             "sensitivity / specificity that ȳ implies" + (", and in brackets the mean weight the vote gave the set where "
             f"at least two sets label the entry (1/{len(sets)} = no preference)." if weights else
             " (the run's strategy does not vote: ȳ is the target it trains toward)."), "",
             "| finding | mean ȳ | " + " | ".join(sets) + " |", "|---|---:|" + "---:|" * len(sets)]
    for f in findings:
        cells = [f"{_fmt(row[s, f]['est_sensitivity_vote'], 2)} / {_fmt(row[s, f]['est_specificity_vote'])}"
                 + (f" ({_fmt(row[s, f]['vote_weight'], 2)})" if weights else "") for s in sets]
        lines.append(f"| {f} | {_fmt(report['vote']['prevalence'][f])} | " + " | ".join(cells) + " |")
    return lines


def _error_lines(error: Mapping[str, Any], sets: Sequence[str]) -> list[str]:
    lines = ["| label set | sensitivity MAE | specificity MAE | MAE (both) | estimates inside the 95 % CI |",
             "|---|---:|---:|---:|---:|"]
    for name, e in [*((s, error["sets"][s]) for s in sets), ("**all sets**", error["overall"])]:
        lines.append(f"| {name} | {_fmt(e['sensitivity_mae'])} | {_fmt(e['specificity_mae'])} | {_fmt(e['mae'])} | "
                     f"{e['inside_ci']} / {e['with_ci']} |")
    return lines


def _markdown_measured(report: Mapping[str, Any], row: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[str]:
    sets, truth = report["label_sets"], report["truth"]
    error, on_hand = report["error"], report["error_on_hand"]
    lines = ["", f"## Estimates against {truth}", "",
             f"Mean absolute error of Dawid–Skene's estimates against the values measured on {truth}, over the "
             f"{len(error['findings'])} findings with ≥ {report['min_positives']} positives there "
             f"({', '.join(error['findings']) or 'none'}).", ""]
    lines += _error_lines(error, sets)
    lines += ["", f"The same, with the estimate taken on the items that carry {truth} only (Dawid–Skene's posterior "
              f"weighs those items; the {truth} themselves are not used). A large drop from the table above means "
              f"the {truth} cover a different population than the label sets.", ""]
    lines += _error_lines(on_hand, sets)
    if report.get("error_vote"):
        lines += ["", f"The trained run's vote (its refined labels as P(y = 1), over all items) against {truth}:", ""]
        lines += _error_lines(report["error_vote"], sets)
    lines += ["", "Per finding (mean over the sets):", "",
              f"| finding | positives | negatives | sensitivity MAE | specificity MAE | on the items with {truth}: "
              f"sens. / spec. MAE | Dawid–Skene positives (posterior ≥ 0.5): {truth} 1 / 0 / none |",
              "|---|---:|---:|---:|---:|---|---|"]
    for f in error["findings"]:
        e, h, c = error["per_finding"][f], on_hand["per_finding"][f], report["posterior_positives"][f]
        lines.append(f"| {f} | {report['truth_positives'][f]} | {report['truth_negatives'][f]} | {_fmt(e['sensitivity_mae'])} | "
                     f"{_fmt(e['specificity_mae'])} | {_fmt(h['sensitivity_mae'])} / {_fmt(h['specificity_mae'])} | "
                     f"{c['items']}: {c['truth_positive']} / {c['truth_negative']} / {c['unlabelled']} |")
    lines += ["", "Per set and finding: estimate, measured value [95 % Wilson interval] (successes / trials), "
              f"✓ when the estimate lies inside; last column the estimate on the items with {truth}.", "",
              f"| label set | finding | est. sens. | measured sens. | | est. spec. | measured spec. | | on items with {truth}: sens. / spec. |",
              "|---|---|---:|---|---|---:|---|---|---|"]
    mark = {True: "✓", False: "✗", None: ""}
    for s in sets:
        for f in report["findings"]:
            r = row[s, f]
            sens = (f"{_fmt(r['sensitivity'])} [{_fmt(r['sensitivity_low'])}, {_fmt(r['sensitivity_high'])}] "
                    f"({r['true_positives']}/{r['hand_positives']})")
            spec = (f"{_fmt(r['specificity'])} [{_fmt(r['specificity_low'])}, {_fmt(r['specificity_high'])}] "
                    f"({r['true_negatives']}/{r['hand_negatives']})")
            lines.append(f"| {s} | {f} | {_fmt(r['est_sensitivity'])} | {sens} | {mark[r['sensitivity_inside']]} | "
                         f"{_fmt(r['est_specificity'])} | {spec} | {mark[r['specificity_inside']]} | "
                         f"{_fmt(r['est_sensitivity_on_hand'])} / {_fmt(r['est_specificity_on_hand'])} |")
    return lines


def write_csv(report: Mapping[str, Any], path: str | Path) -> Path:
    """One row per label set × finding, columns :data:`CSV_COLUMNS` (empty cell = undefined)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for row in report["rows"]:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    return path


def plot_quality(report: Mapping[str, Any], path: str | Path) -> Path:
    """Heatmaps, sets × findings: estimated sensitivity and specificity; with a truth also estimate − measured;
    with a run the vote's estimates and mean weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets, findings = report["label_sets"], report["findings"]
    row = {(r["label_set"], r["finding"]): r for r in report["rows"]}

    def grid(key: str, minus: str | None = None) -> np.ndarray:
        def value(s: str, f: str) -> float:
            a, b = row[s, f].get(key), row[s, f].get(minus) if minus else 0.0
            return math.nan if a is None or b is None else a - b
        return np.array([[value(s, f) for f in findings] for s in sets], dtype=float)

    panels = [("estimated sensitivity", grid("est_sensitivity"), "viridis", (0.0, 1.0)),
              # Specificities sit near 1 where findings are rare: a narrower scale shows their spread.
              ("estimated specificity", grid("est_specificity"), "viridis", (0.5, 1.0))]
    if report.get("truth"):
        panels += [(f"sensitivity: estimate − {report['truth']}", grid("est_sensitivity", "sensitivity"), "RdBu_r", (-0.5, 0.5)),
                   (f"specificity: estimate − {report['truth']}", grid("est_specificity", "specificity"), "RdBu_r", (-0.5, 0.5))]
    if report.get("vote"):
        panels += [("sensitivity from the run's vote", grid("est_sensitivity_vote"), "viridis", (0.0, 1.0)),
                   ("specificity from the run's vote", grid("est_specificity_vote"), "viridis", (0.5, 1.0))]
        if report["vote"]["weights"]:
            panels.append(("mean vote weight (≥ 2 sets label)", grid("vote_weight"), "viridis", (0.0, 1.0)))
    rows_ = (len(panels) + 1) // 2
    width, height = 2 * (1.5 + 0.55 * len(findings)), rows_ * (1.6 + 0.4 * len(sets))
    figure, axes = plt.subplots(rows_, 2, figsize=(width, height), squeeze=False)
    for axis, (title, values, cmap, (low, high)) in zip(axes.ravel(), panels):
        image = axis.imshow(np.ma.masked_invalid(values), vmin=low, vmax=high, cmap=cmap, aspect="auto")
        axis.set_xticks(range(len(findings)), findings, rotation=45, ha="right", fontsize=7)
        axis.set_yticks(range(len(sets)), sets, fontsize=7)
        for i in range(len(sets)):
            for j in range(len(findings)):
                if values[i, j] == values[i, j]:
                    text = f"{values[i, j]:.2f}".replace("-0.00", "0.00")
                    axis.text(j, i, text, ha="center", va="center", fontsize=6,
                              color="white" if (cmap == "viridis" and values[i, j] < low + 0.6 * (high - low)) else "black")
        axis.set_title(title, fontsize=9)
        figure.colorbar(image, ax=axis, fraction=0.03)
    for axis in axes.ravel()[len(panels):]:
        axis.axis("off")
    source = "Dawid–Skene per finding" + (" and the run's vote" if report.get("vote") else "")
    figure.suptitle(f"Label-set quality, {source} ({report['items']} items)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_report(
    report: Mapping[str, Any],
    out: str | Path,
    title: str = "Label-set quality",
    command: str | None = None,
    extra_markdown: str = "",
) -> dict[str, Path]:
    """Write ``<out>.md``, ``<out>.csv``, ``<out>.png`` and ``<out>.json``; return their paths by suffix."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out.with_name(out.name + "." + suffix) for suffix in ("md", "csv", "png", "json")}
    markdown = markdown_report(report, title, command)
    paths["md"].write_text(markdown + (("\n" + extra_markdown.rstrip() + "\n") if extra_markdown else ""), encoding="utf-8")
    write_csv(report, paths["csv"])
    plot_quality(report, paths["png"])
    document = {"command": command, **report}
    paths["json"].write_text(json.dumps(_json_safe(document), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return paths
