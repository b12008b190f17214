#!/usr/bin/env python
"""Research: the robustness suite the default strategy is chosen on (the code is l2v_monai/experiments/vote_suite.py; ``--help`` for usage)."""
from l2v_monai.experiments.vote_suite import main

if __name__ == "__main__":
    raise SystemExit(main())
