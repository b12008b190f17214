"""Score a predictions CSV against a hand-labelled datalist: per-finding AUC tables and ROC plots.

    l2v-evaluate --predictions bundle/eval/predictions.csv --datalist hand_labelled.json --out bundle/eval/hand

The CSV is what ``bundle/configs/inference.json`` writes (image path, then one probability per
finding in the datalist's order; an optional header row whose first cell is ``filename`` or
``image`` is accepted). Every hand-labelled image must have a prediction and every prediction row
must name a hand-labelled image: a mismatch is an error listing the first offending paths.
Writes ``auc.{md,csv,json}``, ``roc/*.png`` and ``summary.json`` under ``--out``. Needs the ``[eval]``
extra (matplotlib, pandas): ``pip install 'l2v-monai[eval]'``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from l2v_monai.data.datalist import read_datalist
from l2v_monai.evaluation import evaluate_predictions
from l2v_monai.extras import MissingExtraError


def read_predictions(path: Path, num_findings: int) -> dict[str, np.ndarray]:
    """``{image path: probabilities}`` from a predictions CSV; bad rows are errors naming the line."""
    out: dict[str, np.ndarray] = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or (line == 1 and row[0].strip().lower() in ("filename", "image")):
                continue
            if len(row) != 1 + num_findings:
                raise ValueError(f"{path}, line {line}: expected an image path and {num_findings} values, got {len(row)} cells")
            try:
                values = np.array([float(x) for x in row[1:]], dtype=np.float64)
            except ValueError as err:
                raise ValueError(f"{path}, line {line}: {err}") from err
            key = str(Path(row[0]).resolve())
            if key in out:
                raise ValueError(f"{path}, line {line}: a second prediction for {row[0]}")
            out[key] = values
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", type=Path, required=True, help="predictions CSV written by inference.json")
    p.add_argument("--datalist", type=Path, required=True, help="hand-labelled datalist JSON (items with 'label')")
    p.add_argument("--split", default="test", help="the datalist split to score (default: test)")
    p.add_argument("--out", type=Path, required=True, help="folder for the tables, ROC plots and summary.json")
    p.add_argument("--model-name", default="model", help="the model's column name in the tables")
    args = p.parse_args(argv)

    data = read_datalist(args.datalist, splits=[args.split], require=[args.split])
    findings, items = data["findings"], data[args.split]
    scores = read_predictions(args.predictions, len(findings))
    keys = [str(Path(it["image"]).resolve()) for it in items]
    missing = [k for k in keys if k not in scores]
    extra = sorted(set(scores) - set(keys))
    if missing or extra:
        raise SystemExit(
            f"{args.predictions} does not match {args.datalist} [{args.split}]: {len(missing)} labelled images without a "
            f"prediction (first: {missing[:3]}), {len(extra)} predictions for unlabelled images (first: {extra[:3]})"
        )
    y_true = np.array([[np.nan if v is None else v for v in it["label"]] for it in items], dtype=np.float64)
    try:
        summary = evaluate_predictions(
            y_true, np.stack([scores[k] for k in keys]), findings, args.out, model_name=args.model_name
        )
    except MissingExtraError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print((args.out / "auc.md").read_text())
    print(f"macro AUC {summary['macro_auc']:.4f} over {summary['n_scored']} findings; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
