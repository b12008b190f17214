#!/usr/bin/env python
"""``l2v-prepare-openi`` from a checkout; the code is l2v_monai/cli/prepare_openi.py (``--help`` for usage)."""
from l2v_monai.cli.prepare_openi import main

if __name__ == "__main__":
    raise SystemExit(main())
