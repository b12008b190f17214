#!/usr/bin/env python
"""``l2v-compare`` from a checkout; the code is l2v_monai/cli/compare.py (``--help`` for usage)."""
from l2v_monai.cli.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
