"""The synthetic MIMIC-CXR tree for tests; it lives in l2v_monai.experiments.synthetic_mimic (``make demo-bundle`` uses it too)."""

from __future__ import annotations

from l2v_monai.experiments.synthetic_mimic import make_mimic_tree

__all__ = ["make_mimic_tree"]
