"""One table of the vote's ablations on the development seeds of the three testbeds.

Reads the JSON files that ``reproduce_report_testbed.py``, ``reproduce_multilabel_testbed.py`` and
``reproduce_poc.py`` wrote for the rows of ``scripts/vote_variants.py`` and prints, per variant, each
testbed's score and its difference from the anchored vote (same seeds and folds):

    python scripts/vote_ablation_table.py --report runs/rep_dev_*.json --multilabel runs/ml_dev_*.json \\
        --poc runs/poc_dev_*.json --out results/vote_ablations_dev.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from l2v_monai.experiments.vote_variants import VARIANTS


def _means(paths: list[Path], score: str, runs_key: str | None = None) -> dict[str, float]:
    """Mean ``score`` per method over every row of the given result files (``runs_key``: where they nest)."""
    out: dict[str, list[float]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        for method, rows in (data[runs_key] if runs_key else data).items():
            out.setdefault(method, []).extend(r[score] for r in rows)
    return {m: statistics.fmean(v) for m, v in out.items()}


def _poc(paths: list[Path]) -> tuple[dict[str, float], dict[str, bool]]:
    acc: dict[str, list[float]] = {}
    clean_above: dict[str, bool] = {}
    for path in paths:
        for method, rows in json.loads(path.read_text()).items():
            acc.setdefault(method, []).extend(r["test_accuracy"] for r in rows)
            for r in rows:
                w = r.get("vote_weights") or {}
                ok = all(v["clean"] > v["noisy"] for v in w.values() if v.get("clean") is not None and v.get("noisy") is not None)
                clean_above[method] = clean_above.get(method, True) and bool(w) and ok
    return {m: statistics.fmean(v) for m, v in acc.items()}, clean_above


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", nargs="*", type=Path, default=[])
    p.add_argument("--multilabel", nargs="*", type=Path, default=[])
    p.add_argument("--poc", nargs="*", type=Path, default=[])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    report, multilabel = _means(args.report, "mean_auc", "runs"), _means(args.multilabel, "test_mean_auc")
    poc, clean_above = _poc(args.poc)

    def cell(scores: dict[str, float], name: str, digits: int) -> str:
        if name not in scores:
            return "–"
        base = scores.get("l2v_default")
        delta = "" if name == "l2v_default" or base is None else f" ({scores[name] - base:+.{digits}f})"
        return f"{scores[name]:.{digits}f}{delta}"

    lines = [
        "| variant | what changes | report testbed mean AUC (Δ) | multi-label testbed mean AUC (Δ) | Fashion-MNIST accuracy (Δ) | clean > noisy weight, every annotator |",
        "|---|---|---|---|---|---|",
    ]
    for name, (_, text) in VARIANTS.items():
        if not any(name in s for s in (report, multilabel, poc)):
            continue
        weights = "–" if name not in clean_above else ("yes" if clean_above[name] else "no")
        lines.append(f"| `{name}` | {text} | {cell(report, name, 4)} | {cell(multilabel, name, 4)} | {cell(poc, name, 3)} | {weights} |")
    command = "python scripts/vote_ablation_table.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = ["The anchored vote and its ablations on development seed 100 of each testbed (report testbed: 5 folds;",
              "multi-label testbed: 6,000 images; Fashion-MNIST: 4,000 images, 4 epochs). Δ is against `l2v_default`. Produced by:",
              "", "    " + command, ""]
    text = "\n".join(header + lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
