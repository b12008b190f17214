"""Seconds for the bootstrap AUC intervals of a hand-labelled set (``auc_intervals``).

Seeded synthetic hand labels (14 findings, prevalence 5-40 %, 10 % unlabelled) and scores; times
the percentile bootstrap of every finding's AUC and the macro AUC, plus each finding's DeLong
interval, for each study count, by studies and by patients (3 studies a patient).

    python scripts/bench_eval_stats.py                       # 1,000 and 10,000 studies, 2,000 resamples
    python scripts/bench_eval_stats.py --studies 1000 --resamples 2000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from l2v_monai.evaluation.compare import compare_runs
from l2v_monai.evaluation.intervals import auc_intervals
from l2v_monai.findings import CHEXPERT_FINDINGS


def case(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.05, 0.4, len(CHEXPERT_FINDINGS))
    y = (rng.random((n, len(CHEXPERT_FINDINGS))) < prevalence).astype(float)
    score = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.2, y.shape))))
    y[rng.random(y.shape) < 0.1] = np.nan
    return y, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU(s) visible; {args.resamples} resamples, {len(CHEXPERT_FINDINGS)} findings")
    for n in args.studies:
        y, score = case(n)
        for unit, groups in (("studies", None), ("patients", (np.arange(n) // 3).tolist())):
            start = time.perf_counter()
            result = auc_intervals(y, score, CHEXPERT_FINDINGS, groups=groups, n_resamples=args.resamples, seed=0)
            seconds = time.perf_counter() - start
            macro = result["macro"]
            print(f"{n:>6} studies, resampling {unit:<8}: {seconds:6.2f} s  "
                  f"(macro AUC {macro['auc']:.3f}, 95 % {macro['auc_low']:.3f}-{macro['auc_high']:.3f})")
        start = time.perf_counter()
        compare_runs(y, {"a": score, "b": score ** 2 + 0.01 * np.random.default_rng(1).random(score.shape)},
                     CHEXPERT_FINDINGS, n_resamples=args.resamples)
        print(f"{n:>6} studies, paired comparison of 2 runs: {time.perf_counter() - start:6.2f} s")


if __name__ == "__main__":
    main()
