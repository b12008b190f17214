"""What a report says about one finding, and how per-mention states become per-report labels.

Both labelers find *mentions* of the 14 CheXpert findings and give each mention one of four
states (``Assertion``). Per report and finding the mentions are combined the CheXpert way: any
positive mention makes the finding positive; otherwise any uncertain one makes it uncertain;
otherwise any negative one makes it negative; without mentions it is *not mentioned*.

No Finding is not mentioned by name; it follows CheXpert's rule: positive when no other finding
except Support Devices is positive or uncertain, else negative.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from l2v_monai.findings import CHEXPERT_FINDINGS

NO_FINDING = "No Finding"
# Findings whose positive or uncertain mention does not stop No Finding (CheXpert's rule).
NO_FINDING_IGNORES: frozenset[str] = frozenset({"Support Devices"})
# The findings a labeler looks for in the text: all but No Finding, which is derived.
MENTIONED_FINDINGS: tuple[str, ...] = tuple(f for f in CHEXPERT_FINDINGS if f != NO_FINDING)


class Assertion(enum.IntEnum):
    """A report's statement about one finding; the value orders them for combining (higher wins)."""

    NOT_MENTIONED = 0
    NEGATIVE = 1
    UNCERTAIN = 2
    POSITIVE = 3


def combine(states: Iterable[Assertion]) -> Assertion:
    """Several mentions of one finding → one state: positive > uncertain > negative > not mentioned."""
    return max(states, default=Assertion.NOT_MENTIONED)


def report_assertions(mentions: Mapping[str, Iterable[Assertion]]) -> tuple[Assertion, ...]:
    """Per-finding mention states → the 14 states in ``CHEXPERT_FINDINGS`` order, No Finding derived.

    Raises ``KeyError`` for a finding name that is not one of the 13 mentioned findings, so that a
    typo in a rule table cannot silently drop its mentions.
    """
    unknown = sorted(set(mentions) - set(MENTIONED_FINDINGS))
    if unknown:
        raise KeyError(f"not CheXpert findings: {unknown}")
    states = {finding: combine(mentions.get(finding, ())) for finding in MENTIONED_FINDINGS}
    abnormal = any(
        state in (Assertion.POSITIVE, Assertion.UNCERTAIN)
        for finding, state in states.items()
        if finding not in NO_FINDING_IGNORES
    )
    states[NO_FINDING] = Assertion.NEGATIVE if abnormal else Assertion.POSITIVE
    return tuple(states[finding] for finding in CHEXPERT_FINDINGS)


def assertions_to_labels(
    assertions: Sequence[Sequence[Assertion]], uncertain: float, not_mentioned: float = 0.0
) -> np.ndarray:
    """``S × 14`` states → float32 labels: positive 1, negative 0, uncertain → ``uncertain``,
    not mentioned → ``not_mentioned`` (0 by default, as the MIMIC-CXR path maps CheXpert blanks)."""
    table = np.array([not_mentioned, 0.0, uncertain, 1.0], dtype=np.float32)
    codes = np.array([[int(state) for state in row] for row in assertions], dtype=np.int64).reshape(
        len(assertions), len(CHEXPERT_FINDINGS)
    )
    return table[codes]
