#!/usr/bin/env python
"""How good is each label set, per finding? Estimated without hand labels, measured where they exist.

On a datalist (its training split's ``labels``, M × N, null = no label):

    l2v-quality --datalist datalist.json --out results/label_quality

For every label set × finding it writes Dawid–Skene's estimated sensitivity, specificity and the
finding's estimated prevalence (binary Dawid–Skene per finding, fitted with crowd-kit on all the
sets together), and how often the sets disagree (per finding, and which pairs most). Where items
carry hand labels (``label``: N values, or ``clean``: N values or a class index), or a second
datalist holds them (``--hand-datalist``, matched by image path), it adds the measured values with
95 % Wilson intervals and their counts, whether each estimate lies inside its interval, and the
mean absolute error of the estimates over the findings with >= --min-positives hand positives.

On the real OpenI report testbed (label sets saved by scripts/reproduce_report_testbed.py
--label-sets or scripts/independent_labelers.py, truth = the reports' MeSH tags):

    l2v-quality --report-testbed --reports NLMCXR_reports.tgz \\
        --label-sets labels.npz foreign_labels.npz --out results/label_quality_openi

Writes <out>.md (tables), <out>.csv (one row per set × finding), <out>.png (heatmaps, sets ×
findings) and <out>.json (every number). Only aggregate numbers are written, never report text or
item ids.

With a trained bundle run (``--run``, the bundle root that holds ``models/checkpoint.pt``; give the
config keys it was trained with that differ from configs/train.json with ``--override``), its saved
network and vote go once over the training split (CPU, no update). The report then adds a second
estimate of each set's sensitivity and specificity, with the vote's refined labels as P(y = 1), and
the mean weight the vote gave each set per finding:

    l2v-quality --datalist datalist.json --run bundle --override image_size=64 --out results/label_quality
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from l2v_monai.quality.label_set_estimates import estimate_error, quality_inputs_from_datalist, quality_report, write_report
from l2v_monai.labelers.against_truth import MIN_POSITIVES

#: The accuracy we aim for: the mean absolute error of the estimates against MeSH (testbed mode only).
TARGET_MAE = 0.05


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_argument_group("a datalist")
    source.add_argument("--datalist", type=Path, help="datalist JSON whose items carry 'labels' (M × N) and name 'label_sets'")
    source.add_argument("--split", default="training", help="the split whose label sets are scored (default: training)")
    source.add_argument("--sets", nargs="+", metavar="NAME", help="only these label sets, by name (default: all)")
    source.add_argument("--hand-datalist", type=Path,
                        help="a second datalist whose items carry hand labels ('label', N), matched to --split by image path")
    source.add_argument("--run", type=Path,
                        help="the bundle root of a run trained on this datalist (models/checkpoint.pt): adds the vote's estimates")
    source.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config keys the run was trained with (JSON values or plain strings), e.g. image_size=64")
    testbed = parser.add_argument_group("or the OpenI report testbed")
    testbed.add_argument("--report-testbed", action="store_true",
                         help="score saved report label sets against OpenI's MeSH tags instead of a datalist")
    testbed.add_argument("--reports", type=Path, help="the OpenI report archive, NLMCXR_reports.tgz")
    testbed.add_argument("--label-sets", type=Path, nargs="+", metavar="NPZ",
                         help="label-set .npz files made from those reports (all their sets are fitted together)")
    parser.add_argument("--min-positives", type=int, default=MIN_POSITIVES,
                        help=f"findings need this many hand (or MeSH) positives to enter the error (default {MIN_POSITIVES})")
    parser.add_argument("--out", type=Path, default=Path("results/label_quality"),
                        help="output path without suffix: writes <out>.md, .csv, .png, .json (default results/label_quality)")
    parser.add_argument("--title", help="markdown title (default names the input)")
    return parser


def load_report_testbed(reports: Path, label_files: list[Path]) -> tuple[np.ndarray, list[str], list[str], np.ndarray, dict[str, Any]]:
    """Saved label sets of the OpenI reports, side by side, and the reports' MeSH truth.

    The files must exist (they are never relabelled here) and must have been made from these
    reports' texts (their fingerprint is checked); set names must not repeat across files.
    """
    from l2v_monai.labelers.openi_corpus import load_openi_corpus, read_label_sets

    for path in label_files:
        if not path.is_file():
            raise FileNotFoundError(
                f"label-set file not found: {path} (make one with scripts/reproduce_report_testbed.py --label-sets "
                "or scripts/independent_labelers.py)"
            )
    corpus = load_openi_corpus(reports, label_file=label_files[0])
    parts, names, groups = [np.asarray(corpus.label_sets)], list(corpus.set_names), {str(label_files[0]): list(corpus.set_names)}
    for path in label_files[1:]:
        labels, more = read_label_sets(path, corpus.texts)
        repeated = sorted(set(more) & set(names))
        if repeated:
            raise ValueError(f"{path}: label sets {repeated} are already in an earlier file; give each set once")
        parts.append(labels)
        names += more
        groups[str(path)] = more
    meta = {"reports": len(corpus.texts), "excluded": corpus.excluded, "files": groups}
    return np.concatenate(parts, axis=1), names, list(corpus.findings), corpus.truth, meta


def _testbed_markdown(report: dict[str, Any], labels: np.ndarray, names: list[str], findings: list[str],
                      truth: np.ndarray, meta: dict[str, Any], min_positives: int, command: str) -> tuple[str, dict[str, Any]]:
    """Where the error comes from: the MAE with and without No Finding, on the MeSH-labelled reports, per file."""
    kept = report["error"]["findings"]
    without = [f for f in kept if f != "No Finding"]
    rows = [
        ("all sets fitted together, all reports", "all", report["error"]),
        ("all sets fitted together, all reports", "without No Finding", estimate_error(report, without)),
        ("all sets fitted together, on the MeSH-labelled reports", "all", report["error_on_hand"]),
        ("all sets fitted together, on the MeSH-labelled reports", "without No Finding",
         estimate_error(report, without, estimate="on_hand")),
    ]
    numbers: dict[str, Any] = {"without_no_finding": rows[1][2], "on_mesh_reports_without_no_finding": rows[3][2],
                               "per_file": {}}
    if len(meta["files"]) > 1:
        for path, sets in meta["files"].items():
            index = [names.index(s) for s in sets]
            alone = quality_report(labels[:, index], sets, findings, truth, min_positives, "MeSH labels")
            rows.append((f"only {Path(path).name} fitted ({len(sets)} sets), all reports", "all", alone["error"]))
            numbers["per_file"][Path(path).name] = alone["error"]
    excluded = ", ".join(f"{v} {k}" for k, v in meta["excluded"].items()) or "none"
    text = [
        "## Where the error comes from", "",
        f"{meta['reports']} OpenI reports with FINDINGS or IMPRESSION text (left out: {excluded}). MeSH labels a finding "
        "1 when its tag is present; every finding but No Finding is 0 only on the reports tagged `normal`, and No "
        "Finding is 0 on every report with another tag, including tags outside the 14 findings. Every row below "
        "comes from the one command at the top of this file:", "", f"    {command}", "",
        "| Dawid–Skene fitted on | findings | sensitivity MAE | specificity MAE | MAE (both) | inside the 95 % CI |",
        "|---|---|---:|---:|---:|---:|",
    ]
    fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    for what, which, error in rows:
        o = error["overall"]
        text.append(f"| {what} | {which} ({len(error['findings'])}) | {fmt(o['sensitivity_mae'])} | {fmt(o['specificity_mae'])} | "
                    f"{fmt(o['mae'])} | {o['inside_ci']} / {o['with_ci']} |")
    overall = report["error"]["overall"]["mae"]
    reached = "reached" if overall is not None and overall <= TARGET_MAE else "not reached"
    text += ["", f"Our target: MAE ≤ {TARGET_MAE} (all sets fitted together, all reports, the findings with ≥ "
             f"{min_positives} MeSH positives): **{reached}**, {overall:.3f}."]
    numbers["target_mae"], numbers["target_reached"] = TARGET_MAE, reached == "reached"
    return "\n".join(text) + "\n", numbers


def _run_outputs(args: argparse.Namespace) -> dict[str, Any]:
    from l2v_monai.engine.run_outputs import evidence_from_run, parse_overrides

    run = evidence_from_run(args.run, args.datalist, parse_overrides(args.override))
    if args.sets and list(args.sets) != run["label_sets"]:
        raise ValueError(f"--sets {list(args.sets)} differ from the label sets the run trained on, {run['label_sets']}")
    return run


def _check_run_matches(run: dict[str, Any], labels: np.ndarray, names: list[str], findings: list[str],
                       args: argparse.Namespace) -> None:
    """The run's training items must be the datalist's: same sets, findings and labels, in order."""
    where = f"the run {args.run} (with its overrides) and {args.datalist}"
    if run["findings"] != findings or run["label_sets"] != names:
        raise ValueError(f"{where} name different findings or label sets: {run['findings']} / {run['label_sets']} "
                         f"against {findings} / {names}")
    same = run["labels"].shape == labels.shape and np.array_equal(
        np.asarray(run["labels"], dtype=np.float32), np.asarray(labels, dtype=np.float32), equal_nan=True)
    if not same:
        raise ValueError(f"{where} hold different training items ({run['labels'].shape[0]} against {labels.shape[0]}, "
                         "or other labels): give --override datalist=... or dataset_dir=... as the run was trained")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command = "l2v-quality " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.report_testbed:
        if args.datalist is not None or args.hand_datalist is not None or args.run is not None:
            parser.error("--report-testbed reads --reports and --label-sets, not a datalist or a run")
        if args.reports is None or not args.label_sets:
            parser.error("--report-testbed needs --reports NLMCXR_reports.tgz and --label-sets FILE.npz [...]")
    elif args.datalist is None:
        parser.error("give --datalist datalist.json, or --report-testbed with --reports and --label-sets")
    elif args.run is not None and args.split != "training":
        parser.error("--run estimates from the vote over the training split (what the run trained on); drop --split")
    try:
        extra, extra_numbers = "", {}
        if args.report_testbed:
            labels, names, findings, truth, meta = load_report_testbed(args.reports, list(args.label_sets))
            report = quality_report(labels, names, findings, truth, args.min_positives, "MeSH labels")
            extra, extra_numbers = _testbed_markdown(report, labels, names, findings, truth, meta, args.min_positives, command)
            report = {**report, "testbed": {**meta, **extra_numbers}}
            title = args.title or "Label-set quality on the OpenI report testbed"
        else:
            run = _run_outputs(args) if args.run is not None else None
            sets = run["label_sets"] if run is not None else args.sets
            labels, names, findings, hand = quality_inputs_from_datalist(args.datalist, args.split, sets, args.hand_datalist)
            if run is not None:
                _check_run_matches(run, labels, names, findings, args)
            report = quality_report(labels, names, findings, hand, args.min_positives,
                                    vote=None if run is None else run["vote"], vote_weights=None if run is None else run["weights"])
            title = args.title or f"Label-set quality: {args.datalist.name} ({args.split})"
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    paths = write_report(report, args.out, title, command, extra)
    summary = f"{report['items']} items, {len(report['label_sets'])} label sets, {len(report['findings'])} findings"
    if report.get("error"):
        o = report["error"]["overall"]
        fmt = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
        summary += (f"; estimate vs {report['truth']}: sensitivity MAE {fmt(o['sensitivity_mae'])}, specificity MAE "
                    f"{fmt(o['specificity_mae'])}, both {fmt(o['mae'])} over {len(report['error']['findings'])} findings")
    print(summary)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
