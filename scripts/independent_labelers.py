#!/usr/bin/env python
"""Research: A second, independent pair of rule report labelers, written for a robustness check of the label (the code is l2v_monai/experiments/independent_labelers.py; ``--help`` for usage)."""
from l2v_monai.experiments.independent_labelers import main

if __name__ == "__main__":
    raise SystemExit(main())
