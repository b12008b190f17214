#!/usr/bin/env python
"""``l2v-quality`` from a checkout; the code is l2v_monai/cli/quality_report.py (``--help`` for usage)."""
from l2v_monai.cli.quality_report import main

if __name__ == "__main__":
    raise SystemExit(main())
