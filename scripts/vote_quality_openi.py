#!/usr/bin/env python
"""Research: The vote's estimate of each label set's quality on the OpenI report testbed, against Dawid–Skene's (the code is l2v_monai/experiments/vote_quality_openi.py; ``--help`` for usage)."""
from l2v_monai.experiments.vote_quality_openi import main

if __name__ == "__main__":
    raise SystemExit(main())
