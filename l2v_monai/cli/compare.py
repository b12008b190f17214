"""Compare two or more trained runs on the same hand-labelled items: paired ΔAUC per finding and macro, forest plots.

    l2v-compare --datalist hand_labelled.json RUN_A RUN_B [RUN_C ...] --out compare/

Each RUN is a bundle run folder (its ``eval/predictions.csv``, written by ``inference.json``) or a
``predictions.csv`` file. Every run must hold a prediction for exactly the datalist split's
items: an item missing from one run (or a prediction for another item) is an error listing them.
The first run is the reference; each later run is compared to it. Per finding: DeLong's paired
test (``--method bootstrap`` for the paired bootstrap); the macro AUC: paired bootstrap, over
patients when the items carry ``subject_id`` or ``patient_id``. Holm's correction across findings.
Writes ``compare.md``, ``compare.json`` and one forest-plot PNG per pair. Needs the ``[eval]`` extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2v_monai.cli.evaluate import add_statistics_arguments
from l2v_monai.evaluation.compare import METHODS
from l2v_monai.evaluation.compare_report import comparison_report
from l2v_monai.evaluation.hand_set import check_positives, match_predictions, patient_ids, read_hand_set, read_predictions
from l2v_monai.extras import MissingExtraError


def predictions_file(run: Path) -> Path:
    """A run folder's ``eval/predictions.csv``, or ``run`` itself when it is a file."""
    if run.is_file():
        return run
    if run.is_dir():
        for candidate in (run / "eval" / "predictions.csv", run / "predictions.csv"):
            if candidate.is_file():
                return candidate
        raise ValueError(f"{run}: a run folder without eval/predictions.csv (run inference.json with --bundle_root {run} first)")
    raise ValueError(f"{run}: no such run folder or predictions file")


def run_name(run: Path, taken: set[str]) -> str:
    """A short, unique name: the folder's name, or the CSV's stem (its folder's for ``predictions.csv``)."""
    if run.is_dir():
        name = run.resolve().name
    else:
        name = run.stem if run.stem != "predictions" else run.resolve().parent.name
        if name == "eval":
            name = run.resolve().parent.parent.name
    base, k = name or "run", 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="bundle run folders or predictions.csv files")
    p.add_argument("--datalist", type=Path, required=True, help="hand-labelled datalist JSON (items with 'label')")
    p.add_argument("--out", type=Path, default=Path("compare"), help="folder for compare.md/json and the forest plots")
    p.add_argument("--method", choices=METHODS, default="delong", help="per-finding paired test (default: delong)")
    p.add_argument("--names", nargs="+", default=None, help="a name per run (default: from the folders)")
    add_statistics_arguments(p)
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error("give at least two runs to compare")
    if args.names and len(args.names) != len(args.runs):
        p.error(f"--names gives {len(args.names)} names for {len(args.runs)} runs")
    try:
        hand = read_hand_set(args.datalist, args.split)
        check_positives(hand, args.require)
        taken: set[str] = set()
        runs, sources = {}, {}
        for k, run in enumerate(args.runs):
            path = predictions_file(run)
            name = args.names[k] if args.names else run_name(run, taken)
            if name in runs:
                raise ValueError(f"two runs are named {name!r}; give --names")
            runs[name] = match_predictions(read_predictions(path, len(hand.findings)), hand, path)
            sources[name] = str(path)
        key, groups = patient_ids(hand.items, args.patient_key)
        result = comparison_report(hand.labels, runs, hand.findings, args.out, groups=groups, patient_key=key,
                                   method=args.method, n_resamples=args.resamples, seed=args.seed, sources=sources,
                                   hand_labels=f"{args.datalist} [{args.split}]")
    except (MissingExtraError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for pair in result["pairs"]:
        m = pair["macro"]
        if m["estimable"]:
            print(f"{pair['run_b']} vs {pair['run_a']}: macro ΔAUC {m['difference']:+.4f} "
                  f"(95 % {m['low']:+.4f} to {m['high']:+.4f}), p = {m['p_value']:.3g}")
        else:
            print(f"{pair['run_b']} vs {pair['run_a']}: macro ΔAUC {m['reason']}")
    print(f"written to {args.out / 'compare.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
