"""Research: relabeling scores that were measured as candidates and not shipped as the queue's choices.

Each maps the queue's evidence (:class:`~l2v_monai.quality.relabel_queue.QueueEvidence`) to a score
per (item, finding); :data:`ALL_METHODS` adds them to the queue's own :data:`METHODS` for the
simulated relabeling rounds (:mod:`l2v_monai.experiments.relabel_rounds`), which compare them all.

* ``ds_entropy``, ``vote_entropy``, ``model_entropy``: the binary entropy of Dawid–Skene's
  posterior, of the vote's soft refined label ``ȳ``, of the model's probability;
* ``model_vs_vote``: ``|p − ȳ|``;
* ``activelab``: ``1 −`` cleanlab's ActiveLab score (Goh et al. 2022), per finding as a binary task;
* ``expected_error``: the chance that the training target is wrong, on every entry;
* ``contested_model``: ``disagreement × (1 + model_entropy)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from l2v_monai.quality.relabel_queue import METHODS, QueueEvidence, disagreement_scores, expected_error

__all__ = ["ALL_METHODS", "RESEARCH_METHODS", "activelab_scores", "binary_entropy"]


def binary_entropy(q: np.ndarray) -> np.ndarray:
    """``H(q)`` in bits, 0 at q ∈ {0, 1}, 1 at q = 0.5; NaN stays NaN."""
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    return np.where(np.isnan(q), np.nan, np.nan_to_num(h, nan=0.0))


def activelab_scores(labels: np.ndarray, model: np.ndarray) -> np.ndarray:
    """``1 −`` cleanlab's ActiveLab score per (item, finding): each finding a binary task (``S × N``).

    ``labels`` ``S × M × N`` (NaN = no label), ``model`` the model's ``P(y = 1)`` ``S × N``. Items no
    set labels get NaN; a finding every set labels alike scores 0 (nothing to learn from relabeling).
    """
    import pandas as pd
    from cleanlab.multiannotator import get_active_learning_scores

    labels = np.asarray(labels, dtype=np.float64)
    model = np.clip(np.asarray(model, dtype=np.float64), 1e-6, 1 - 1e-6)
    s, _, n = labels.shape
    out = np.full((s, n), np.nan)
    for j in range(n):
        sets = labels[:, :, j]
        rows = (~np.isnan(sets)).any(1)
        values = sets[rows]
        if len(np.unique(values[~np.isnan(values)])) < 2:
            out[rows, j] = 0.0
            continue
        # A set that labels no item of this finding would be an empty annotator column: cleanlab refuses it.
        used = (~np.isnan(values)).any(0)
        probs = np.stack([1 - model[rows, j], model[rows, j]], axis=1)
        scores, _ = get_active_learning_scores(pd.DataFrame(values[:, used]), probs)
        out[rows, j] = 1.0 - scores
    return out


RESEARCH_METHODS: dict[str, Callable[[QueueEvidence], np.ndarray]] = {
    "ds_entropy": lambda ev: binary_entropy(ev.need("ds_posterior", "ds_entropy")),
    "vote_entropy": lambda ev: binary_entropy(ev.need("vote", "vote_entropy")),
    "model_entropy": lambda ev: binary_entropy(ev.need("model", "model_entropy")),
    "model_vs_vote": lambda ev: np.abs(ev.need("model", "model_vs_vote") - ev.need("vote", "model_vs_vote")),
    "activelab": lambda ev: activelab_scores(ev.labels, ev.need("model", "activelab")),
    "expected_error": lambda ev: expected_error(ev, "expected_error"),
    "contested_model": lambda ev: disagreement_scores(ev.labels) * (1.0 + binary_entropy(ev.need("model", "contested_model"))),
}
#: Every score the rounds compare: the shipped ones and the research candidates.
ALL_METHODS: dict[str, Callable[[QueueEvidence], np.ndarray]] = {**METHODS, **RESEARCH_METHODS}
