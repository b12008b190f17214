"""Re-export of the bundle's ``scripts/errors.py`` (``show_cause_last`` and helpers) under the library's old path."""

from __future__ import annotations

from l2v_monai.bundle_scripts.errors import MONAI_WRAPPER_PREFIXES, cause_last_text, root_cause, show_cause_last

__all__ = ["MONAI_WRAPPER_PREFIXES", "cause_last_text", "root_cause", "show_cause_last"]
