"""Score a predictions CSV against a hand-labelled datalist: AUC tables, ROC plots and a report a clinician can act on.

    l2v-evaluate --predictions bundle/eval/predictions.csv --datalist hand_labelled.json --out bundle/eval/hand
    l2v-evaluate ... --operating-point sensitivity=0.9 --save-thresholds bundle/models/thresholds.json
    l2v-evaluate ... --recalibrate platt --save-calibration bundle/models/calibration.json

The CSV is what ``bundle/configs/inference.json`` writes (image path, then one probability per
finding in the datalist's order, then a call per finding when thresholds were saved; an optional
header row whose first cell is ``filename`` or ``image`` is accepted). Every hand-labelled image
must have a prediction and every prediction row must name a hand-labelled image: a mismatch is an
error listing the offending paths. Writes ``auc.{md,csv,json}``, ``roc/*.png`` and
``summary.json`` and, beside them, ``report.md`` / ``report.json`` / ``reliability/*.png``:
intervals (bootstrap over patients when the items carry ``subject_id`` or ``patient_id``, and
DeLong), PR-AUC, calibration, operating points and subgroups (``view``, ``sex``, ``age_band``,
``site``, ``scanner`` where the items carry them). Needs the ``[eval]`` extra (matplotlib,
pandas): ``pip install 'l2v-monai[eval]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from l2v_monai.bundle_scripts.decisions import CALIBRATION_METHODS
from l2v_monai.evaluation import evaluate_predictions
from l2v_monai.evaluation.bootstrap import DEFAULT_RESAMPLES
from l2v_monai.evaluation.hand_set import check_positives, match_predictions, patient_ids, read_hand_set, read_predictions
from l2v_monai.evaluation.operating_points import DEFAULT_FOLDS, parse_rule
from l2v_monai.evaluation.report import hospital_report
from l2v_monai.evaluation.subgroups import SUBGROUP_COLUMNS, check_metadata
from l2v_monai.extras import MissingExtraError


def add_statistics_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared with ``l2v-compare``: the split, patient grouping and the bootstrap."""
    p.add_argument("--split", default="test", help="the datalist split to score (default: test)")
    p.add_argument("--patient-key", default=None,
                   help="item key holding the patient id for the bootstrap (default: patient_id or subject_id when every "
                        "item has it; otherwise studies are resampled)")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="bootstrap and fold seed (default 0)")
    p.add_argument("--require", nargs="+", default=[], metavar="FINDING",
                   help="findings that must have positives and negatives among the labelled items (else an error)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", type=Path, required=True, help="predictions CSV written by inference.json")
    p.add_argument("--datalist", type=Path, required=True, help="hand-labelled datalist JSON (items with 'label')")
    p.add_argument("--out", type=Path, required=True, help="folder for the tables, plots, summary.json and report.md")
    p.add_argument("--model-name", default="model", help="the model's column name in the tables")
    add_statistics_arguments(p)
    p.add_argument("--operating-point", default=None, metavar="RULE",
                   help="choose thresholds: sensitivity=0.9, specificity=0.95 or youden")
    p.add_argument("--tuning-split", default=None, metavar="SPLIT",
                   help="choose thresholds on this datalist split and measure them on --split (default: cross-fitting within --split)")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help=f"cross-fitting folds (default {DEFAULT_FOLDS})")
    p.add_argument("--save-thresholds", type=Path, default=None, metavar="JSON",
                   help="write the chosen thresholds here (the bundle's models/thresholds.json makes inference write calls)")
    p.add_argument("--recalibrate", choices=CALIBRATION_METHODS, default=None, help="fit a recalibration on the hand labels")
    p.add_argument("--save-calibration", type=Path, default=None, metavar="JSON",
                   help="write the recalibration here (the bundle's models/calibration.json makes inference apply it)")
    p.add_argument("--subgroups", nargs="*", default=None, metavar="KEY",
                   help=f"item keys to report AUC by (default: those of {', '.join(SUBGROUP_COLUMNS)} the items carry)")
    args = p.parse_args(argv)
    if args.save_thresholds and not args.operating_point:
        p.error("--save-thresholds needs --operating-point")
    if args.save_calibration and not args.recalibrate:
        p.error("--save-calibration needs --recalibrate")

    try:
        if args.operating_point:
            parse_rule(args.operating_point)
        hand = read_hand_set(args.datalist, args.split)
        check_positives(hand, args.require)
        predictions = read_predictions(args.predictions, len(hand.findings))
        tuning_labels = tuning_probs = None
        if args.tuning_split:
            # One predictions file covers both splits: each split's items are matched on their own rows.
            tune = read_hand_set(args.datalist, args.tuning_split)
            if tune.findings != hand.findings:
                raise ValueError(f"{args.datalist}: splits {args.split!r} and {args.tuning_split!r} name other findings")
            tune_keys = set(tune.keys) - set(hand.keys)
            tuning_probs = match_predictions({k: v for k, v in predictions.items() if k in set(tune.keys)}, tune,
                                             args.predictions)
            tuning_labels = tune.labels
            predictions = {k: v for k, v in predictions.items() if k not in tune_keys}
        scores = match_predictions(predictions, hand, args.predictions)
        key, groups = patient_ids(hand.items, args.patient_key)
        columns = [c for c in SUBGROUP_COLUMNS if any(c in it for it in hand.items)] if args.subgroups is None else args.subgroups
        metadata = check_metadata(hand.items, columns, source=f"{args.datalist} [{args.split}]") if columns else None
        labels, probs = hand.labels, scores
        summary = evaluate_predictions(labels, probs, hand.findings, args.out, model_name=args.model_name)
        report = hospital_report(
            labels, probs, hand.findings, args.out, model_name=args.model_name, groups=groups, patient_key=key,
            metadata=metadata, n_resamples=args.resamples, seed=args.seed, operating_point=args.operating_point,
            tuning_y_true=tuning_labels, tuning_y_prob=tuning_probs, n_folds=args.folds, recalibrate=args.recalibrate, thresholds_path=args.save_thresholds,
            calibration_path=args.save_calibration, source=f"{args.datalist} [{args.split}]",
        )
    except MissingExtraError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for finding, row in report["discrimination"]["per_finding"].items():
        if not row["estimable"]:
            print(f"warning: {args.datalist} [{args.split}]: {finding!r} {row['reason']} "
                  f"({row['positives']} positive(s), {row['negatives']} negative(s))", file=sys.stderr)
    print((args.out / "auc.md").read_text())
    macro = report["discrimination"]["macro"]
    if macro["estimable"]:
        print(f"macro AUC {summary['macro_auc']:.4f} (95 % {macro['auc_low']:.4f}-{macro['auc_high']:.4f}) over "
              f"{summary['n_scored']} findings; report: {args.out / 'report.md'}")
    else:
        print(f"macro AUC {macro['reason']}; report: {args.out / 'report.md'}")
    for what in ("operating_points", "calibration"):
        saved = (report.get(what) or {}).get("saved_to")
        if saved:
            print(f"{what.replace('_', ' ')} saved to {saved}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
