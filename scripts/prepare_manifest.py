#!/usr/bin/env python
"""``l2v-prepare-manifest`` from a checkout; the code is l2v_monai/cli/prepare_manifest.py (``--help`` for usage)."""
from l2v_monai.cli.prepare_manifest import main

if __name__ == "__main__":
    raise SystemExit(main())
