#!/usr/bin/env python
"""``l2v-labeler-quality`` from a checkout; the code is l2v_monai/cli/labeler_scores.py (``--help`` for usage)."""
from l2v_monai.cli.labeler_scores import main

if __name__ == "__main__":
    raise SystemExit(main())
