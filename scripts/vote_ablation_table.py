#!/usr/bin/env python
"""Research: One table of the vote's ablations on the development seeds of the three testbeds (the code is l2v_monai/experiments/vote_ablation_table.py; ``--help`` for usage)."""
from l2v_monai.experiments.vote_ablation_table import main

if __name__ == "__main__":
    raise SystemExit(main())
