#!/usr/bin/env python
"""Research: Reproduce the paper's Table 2 comparison with the proof-of-concept bundle config (the code is l2v_monai/experiments/reproduce_poc.py; ``--help`` for usage)."""
from l2v_monai.experiments.reproduce_poc import main

if __name__ == "__main__":
    raise SystemExit(main())
