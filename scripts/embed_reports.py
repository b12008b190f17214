#!/usr/bin/env python
"""``l2v-embed-reports`` from a checkout; the code is l2v_monai/cli/embed_reports.py (``--help`` for usage)."""
from l2v_monai.cli.embed_reports import main

if __name__ == "__main__":
    raise SystemExit(main())
