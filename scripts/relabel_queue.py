#!/usr/bin/env python
"""``l2v-relabel-queue`` from a checkout; the code is l2v_monai/cli/relabel_queue.py (``--help`` for usage)."""
from l2v_monai.cli.relabel_queue import main

if __name__ == "__main__":
    raise SystemExit(main())
