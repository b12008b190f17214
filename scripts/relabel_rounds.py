#!/usr/bin/env python
"""Research: Simulated relabeling rounds: hand-label the top N of each ranking by revealing the truth, retrain, score (the code is l2v_monai/experiments/relabel_rounds.py; ``--help`` for usage)."""
from l2v_monai.experiments.relabel_rounds import main

if __name__ == "__main__":
    raise SystemExit(main())
