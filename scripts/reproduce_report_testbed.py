#!/usr/bin/env python
"""Research: Compare label strategies on real reports: OpenI, four labeler label sets, the MeSH truth (the code is l2v_monai/experiments/reproduce_report_testbed.py; ``--help`` for usage)."""
from l2v_monai.experiments.reproduce_report_testbed import main

if __name__ == "__main__":
    raise SystemExit(main())
