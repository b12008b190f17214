#!/usr/bin/env python
"""``l2v-prepare-mimic`` from a checkout; the code is l2v_monai/cli/prepare_mimic.py (``--help`` for usage)."""
from l2v_monai.cli.prepare_mimic import main

if __name__ == "__main__":
    raise SystemExit(main())
