#!/usr/bin/env python
"""Labeling speed: reports per second per labeler on one CPU core.

    python scripts/bench_labelers.py --archive NLMCXR_reports.tgz

Reads the OpenI reports (FINDINGS + IMPRESSION), builds each labeler once (not timed; reported
separately), then times labeling all reports with torch/numpy/BLAS threads set to 1. Prints one
line per labeler; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import os

# One core: set before numpy/torch load their thread pools.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from l2v_monai.labelers import LABELERS, get_labeler  # noqa: E402
from l2v_monai.labelers.sources import read_report_source  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, required=True, help="NLMCXR_reports.tgz (or any --reports source)")
    parser.add_argument("--labelers", nargs="+", choices=sorted(LABELERS), default=list(LABELERS))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    texts = [report.text for report in read_report_source(args.archive)]
    results = {}
    for name in args.labelers:
        start = time.perf_counter()
        labeler = get_labeler(name)
        built = time.perf_counter() - start
        start = time.perf_counter()
        labeler.label_many(texts)
        seconds = time.perf_counter() - start
        results[name] = {"reports": len(texts), "seconds": seconds, "reports_per_s": len(texts) / seconds,
                         "build_seconds": built}
        print(f"{name:>8}: {len(texts)} reports in {seconds:.1f} s = {len(texts) / seconds:.0f} reports/s "
              f"(one core; building the labeler took {built:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
