#!/usr/bin/env python
"""``l2v-evaluate`` from a checkout; the code is l2v_monai/cli/evaluate.py (``--help`` for usage)."""
from l2v_monai.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
