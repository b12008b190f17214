"""The vote's estimate of each label set's quality on the OpenI report testbed, against Dawid–Skene's.

Per seed: train the anchored vote (``bundle/configs/train.json``'s ``strategy_options#l2v``) on the
training part of one cross-validation fold of the report testbed, exactly as round 0 of
``scripts/relabel_rounds.py``; run it once over those training reports
(:func:`l2v_monai.engine.run_outputs.vote_outputs`); then score both estimates of every set's sensitivity
and specificity (Dawid–Skene's, and the one the vote's refined labels imply) against the reports'
MeSH tags on the same items, the findings with at least 20 MeSH positives. No choice is made on
these numbers: the vote's settings are the bundle's defaults.

    python scripts/vote_quality_openi.py --reports NLMCXR_reports.tgz --label-sets labels.npz \\
        --seeds 0 1 2 --out results/vote_quality_openi

Writes ``<out>.md`` (the comparison, then seed 0's full quality report) and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


from l2v_monai.experiments.relabel_rounds import ReportBed, train

from l2v_monai.quality.label_set_estimates import estimate_error, markdown_report, posterior_quality, quality_report  # noqa: E402
from l2v_monai.labelers.against_truth import MIN_POSITIVES  # noqa: E402
from l2v_monai.engine.run_outputs import item_batches, vote_outputs  # noqa: E402

ESTIMATES = {"error": "Dawid–Skene", "error_on_hand": "Dawid–Skene on the MeSH-labelled reports", "error_vote": "the vote's ȳ",
             "error_vote_on_hand": "the vote's ȳ on the MeSH-labelled reports"}


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    bed = ReportBed(seed, args.reports, args.label_sets, args.fold, args.folds, args.epochs, args.cache)
    net, strategy, items, seconds = train(bed, None)
    outputs = vote_outputs(strategy, net, item_batches(items))
    report = quality_report(bed.labels, bed.set_names, bed.findings, bed.truth, args.min_positives, "MeSH labels",
                            vote=outputs.vote, vote_weights=outputs.weights)
    # The vote's estimate on the MeSH-labelled reports only, as Dawid–Skene's "on hand" one: the same
    # rows with the vote's estimates taken over those reports, scored like the vote's.
    sens, spec = posterior_quality(bed.labels, outputs.vote, ~np.isnan(bed.truth))
    rows = [{**r, "est_sensitivity_vote": _number(sens[bed.set_names.index(r["label_set"]), bed.findings.index(r["finding"])]),
             "est_specificity_vote": _number(spec[bed.set_names.index(r["label_set"]), bed.findings.index(r["finding"])])}
            for r in report["rows"]]
    report["error_vote_on_hand"] = {**estimate_error({**report, "rows": rows}, estimate="vote"), "estimate": "vote_on_hand"}
    return {"seed": seed, "train_seconds": seconds, "settings": bed.settings, "report": report}


def _number(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def comparison(runs: list[dict[str, Any]], command: str) -> tuple[str, dict[str, Any]]:
    summary: dict[str, Any] = {}
    lines = ["# The vote's estimate of label-set quality on OpenI, against Dawid–Skene's", "",
             "Produced by:", "", f"    {command}", "",
             f"Fold {runs[0]['settings']['fold']} of {runs[0]['settings']['folds']}: "
             f"{runs[0]['settings']['training_items']} training reports, {len(runs[0]['report']['label_sets'])} label sets "
             f"({', '.join(runs[0]['report']['label_sets'])}), {len(runs[0]['report']['error']['findings'])} findings with "
             f"≥ {runs[0]['report']['min_positives']} MeSH positives. Mean absolute error of each estimate of the sets' "
             "sensitivity and specificity against MeSH, on the same items (mean over seeds; per seed in brackets).", "",
             "| estimate | sensitivity MAE | specificity MAE | MAE (both) | inside the 95 % CI |", "|---|---:|---:|---:|---:|"]
    for key, name in ESTIMATES.items():
        per_seed = [r["report"][key]["overall"] for r in runs]
        mean = {m: statistics.fmean(o[m] for o in per_seed) for m in ("sensitivity_mae", "specificity_mae", "mae")}
        summary[key] = {**mean, "per_seed": per_seed}
        seeds = ", ".join(f"{o['mae']:.3f}" for o in per_seed)
        inside = f"{sum(o['inside_ci'] for o in per_seed)} / {sum(o['with_ci'] for o in per_seed)}"
        lines.append(f"| {name} | {mean['sensitivity_mae']:.3f} | {mean['specificity_mae']:.3f} | "
                     f"{mean['mae']:.3f} ({seeds}) | {inside} |")
    lines += ["", "\"On the MeSH-labelled reports\" takes the estimate on the reports that carry a MeSH label for the "
              "finding only (it uses which reports, not their labels); the other rows use every training report. Training took " + ", ".join(f"{r['train_seconds']:.0f} s" for r in runs) + " on the CPU.", ""]
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reports", type=Path, required=True, help="the OpenI archive NLMCXR_reports.tgz")
    p.add_argument("--label-sets", type=Path, required=True, help="the report label sets (.npz) the vote trains from")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=8, help="as scripts/relabel_rounds.py (default 8)")
    p.add_argument("--min-positives", type=int, default=MIN_POSITIVES)
    p.add_argument("--cache", type=Path, help="folder for the report testbed's parsed corpus and MiniLM embeddings")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=Path("results/vote_quality_openi"))
    args = p.parse_args(argv)
    command = "python scripts/vote_quality_openi.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    for path in (args.reports, args.label_sets):
        if not path.is_file():
            p.error(f"file not found: {path}")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    runs = []
    for seed in args.seeds:
        runs.append(one_seed(seed, args))
        o = runs[-1]["report"]
        print(f"seed {seed}: MAE Dawid–Skene {o['error']['overall']['mae']:.4f}, vote {o['error_vote']['overall']['mae']:.4f}",
              flush=True)
    text, summary = comparison(runs, command)
    first = markdown_report(runs[0]["report"], f"Seed {runs[0]['seed']}: the full quality report")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    demoted = "\n".join("#" + line if line.startswith("#") else line for line in first.splitlines())
    args.out.with_suffix(".md").write_text(text + "\n" + demoted + "\n", encoding="utf-8")
    document = {"command": command, "seconds": time.perf_counter() - start, "summary": summary,
                "runs": runs}
    args.out.with_suffix(".json").write_text(json.dumps(document, indent=1, default=float) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
