"""l2v-monai: learning-to-vote from several noisy label sets, for MONAI."""

from __future__ import annotations

__version__ = "0.1.0"
