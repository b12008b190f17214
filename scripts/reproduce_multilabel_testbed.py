#!/usr/bin/env python
"""Research: Compare label strategies on the multi-label testbed with a known truth (the code is l2v_monai/experiments/reproduce_multilabel_testbed.py; ``--help`` for usage)."""
from l2v_monai.experiments.reproduce_multilabel_testbed import main

if __name__ == "__main__":
    raise SystemExit(main())
