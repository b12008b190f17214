"""The baseline strategies: fixed targets from the label sets, fitted targets, and confusion matrices.

* ``single`` — one named label set.
* ``majority`` — majority vote; ties broken at random per iteration (as the paper does), or set to 1
  (``ties="positive"``), or left out (``"nan"``).
* ``mean`` — the soft average of the available label sets.
* ``dawid_skene`` — Dawid–Skene aggregation (crowd-kit, imported only when fitted), fitted once before training.
* ``cm`` — Tanno et al. (2019): a learnable confusion matrix per annotator.
* ``consensus`` — only the entries where the sets confidently agree (unanimous by default).
* ``overrule`` — majority vote, except on entries the sets contest, where the model's own confident
  prediction (after a warm-up) decides: self-training restricted to contested entries.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from l2v_monai.labels import check_ties, majority_vote, split_labels
from l2v_monai.strategies import vote as v
from l2v_monai.strategies.dawid_skene import fit_binary, fit_classes
from l2v_monai.strategies.base import HAND_KEY, TARGET_KEY, Strategy, StrategyOutput, trust_hand

__all__ = [
    "SingleLabelSet",
    "MajorityVote",
    "MeanLabel",
    "FittedTargets",
    "DawidSkene",
    "ConfusionMatrices",
    "consensus_targets",
    "Consensus",
    "ModelOverrule",
]


class SingleLabelSet(Strategy):
    """Train on one label set, chosen by name (``label_sets`` lists the names in order) or index."""

    name = "single"

    def __init__(self, label_set: str | int = 0, label_sets: Sequence[str] | None = None, multiclass: bool = False) -> None:
        super().__init__(multiclass)
        if isinstance(label_set, str):
            if not label_sets or label_set not in label_sets:
                raise ValueError(f"label set {label_set!r} is not among the label sets {list(label_sets or [])}")
            label_set = list(label_sets).index(label_set)
        self.index = int(label_set)

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        return self._fixed_target_output(logits, trust_hand(batch, batch["labels"][:, self.index]))


class MajorityVote(Strategy):
    """Majority vote, recomputed each iteration.

    ``ties="random"`` (default, the paper's MV) gives each tie a fresh seeded coin per iteration;
    ``"positive"``/``"one"`` labels multi-label ties 1; ``"nan"`` leaves ties out of the loss.
    """

    name = "majority"

    def __init__(self, multiclass: bool = False, seed: int = 0, ties: str = "random") -> None:
        super().__init__(multiclass)
        check_ties(ties, multiclass)
        self.ties = ties
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        target = majority_vote(batch["labels"], self.multiclass, self.generator, self.ties)
        return self._fixed_target_output(logits, trust_hand(batch, target))


class MeanLabel(Strategy):
    """The soft average of the available label sets (equal weights, the untrained vote)."""

    name = "mean"

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        labels = batch["labels"]
        uniform = torch.full(labels.shape[:2], 1.0 / labels.shape[1], device=labels.device)
        ybar, valid = v.vote(uniform, labels)
        target = torch.where(valid > 0, ybar, torch.full_like(ybar, float("nan")))
        return self._fixed_target_output(logits, trust_hand(batch, target))


class FittedTargets(Strategy):
    """A strategy whose targets are fitted once, before training (:meth:`aggregate`), and travel
    with the data items under ``target`` (see :func:`~l2v_monai.strategies.attach_targets`); the step only reads them."""

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        if TARGET_KEY not in batch:
            raise KeyError(
                f"{self.name} needs batch[{TARGET_KEY!r}]: build the training data with "
                "l2v_monai.strategies.attach_targets(items, strategy) so the fitted targets travel with the items"
            )
        # attach_targets already put the hand labels into the fitted targets; trusting them here too
        # keeps items built by other means honest.
        return self._fixed_target_output(logits, trust_hand(batch, batch[TARGET_KEY].float()))


class DawidSkene(FittedTargets):
    """Dawid–Skene (1979) via crowd-kit, fitted once on the whole training set (per finding when multi-label).

    The fitted targets travel with the data items (key ``target``, see :func:`~l2v_monai.strategies.attach_targets`);
    the training step only reads them.
    """

    name = "dawid_skene"

    def __init__(self, multiclass: bool = False, n_iter: int = 100) -> None:
        super().__init__(multiclass)
        self.n_iter = n_iter

    def posterior(self, labels: np.ndarray) -> np.ndarray:
        """Dawid–Skene's posterior ``P(y = 1)`` per (sample, finding), ``S × N`` (multi-label only).

        A calibrated probability rather than a decision: each set's per-finding sensitivity and
        specificity, estimated from all the sets together, weigh its vote. NaN only where no set
        has a label; a finding every set labels alike keeps that label. The fit is
        :func:`l2v_monai.strategies.dawid_skene.fit_binary`, the one the quality report shows.
        """
        if self.multiclass:
            raise ValueError("dawid_skene_posterior is for multi-label sets; use dawid_skene for one-hot data")
        return fit_binary(labels, n_iter=self.n_iter).posterior.astype(np.float32)

    def aggregate(self, labels: np.ndarray, min_confidence: float = 0.0) -> np.ndarray:
        """Per-sample Dawid–Skene labels (``S × N``); NaN where the posterior is below ``min_confidence``."""
        if not self.multiclass:
            p = fit_binary(labels, n_iter=self.n_iter).posterior
            # The likelier class; a posterior of exactly 0.5 goes to 0, as argmax over (0, 1) does.
            decided = ~np.isnan(p) & (np.maximum(p, 1.0 - p) >= min_confidence)
            return np.where(decided, (p > 0.5).astype(np.float32), np.nan).astype(np.float32)
        labels = np.asarray(labels, dtype=np.float32)
        s, _, n = labels.shape
        out = np.full((s, n), np.nan, dtype=np.float32)
        # One-hot sets → class index per (task, worker); a missing set has an all-NaN row.
        tasks, workers = np.nonzero(~np.isnan(labels).any(axis=2))
        if len(tasks):
            classes = np.nan_to_num(labels).argmax(axis=2)[tasks, workers]
            proba = fit_classes(tasks, workers, classes, n_iter=self.n_iter).probas_
            values = proba.columns.to_numpy().astype(int)
            best = values[proba.to_numpy().argmax(axis=1)]
            confident = proba.to_numpy().max(axis=1) >= min_confidence
            rows = np.full((len(proba), n), np.nan, dtype=np.float32)
            rows[confident] = np.eye(n, dtype=np.float32)[best[confident]]
            out[proba.index.to_numpy()] = rows
        return out


class ConfusionMatrices(Strategy):
    """Tanno et al. (CVPR 2019): one learnable confusion matrix per annotator, trace-regularised.

    ``A_m = row_normalise(softplus(rho_m))`` with ``rho_m`` starting at ``6I − 5``; the loss is
    ``Σ_m CE(p · A_m, y_m) + λ · mean_m trace(A_m)``. Multi-class: one ``K × K`` matrix per
    annotator. Multi-label: one ``2 × 2`` matrix per annotator per finding. The matrices get their
    own learning rate (``lr``): at the network's rate they barely leave the identity.

    ``target`` is the posterior of the true label that the loss pulls the model toward: the mean
    over annotators of ``p ⊙ A_m[:, y_m] / (p · A_m[:, y_m])``, weighted like the loss, so that
    ``∂loss/∂logits = c · (p − target)`` per entry (``c`` the summed annotator weights).
    ``extras``: ``annotator_loss`` (the CE sum) and ``trace_loss`` (``λ · mean trace``).
    """

    name = "cm"

    def __init__(
        self, num_sets: int, num_outputs: int, multiclass: bool = False, trace_weight: float = 0.01, lr: float | None = None
    ) -> None:
        super().__init__(multiclass)
        self.trace_weight = trace_weight
        self.lr = lr
        k = num_outputs if multiclass else 2
        shape = (num_sets, k, k) if multiclass else (num_sets, num_outputs, k, k)
        self.rho = nn.Parameter(6.0 * torch.eye(k).expand(shape).clone() - 5.0)

    def matrices(self) -> torch.Tensor:
        a = F.softplus(self.rho)
        return a / a.sum(dim=-1, keepdim=True)

    def param_groups(self, network: nn.Module, lr: float) -> list[dict[str, Any]]:
        return [
            {"params": [p for p in network.parameters() if p.requires_grad], "lr": lr},
            {"params": [self.rho], "lr": self.lr if self.lr is not None else lr},
        ]

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        labels = batch["labels"]
        values, mask = split_labels(labels)
        a = self.matrices()
        if self.multiclass:
            p = torch.softmax(logits.float(), dim=1)  # B × K
            q = torch.einsum("bk,mkl->bml", p, a)  # B × M × K
            observed = mask[..., 0]  # a missing set is missing for every class
            # A_m[z, y_m] for every true class z: B × M × K.
            likelihood = torch.einsum("mkl,bml->bmk", a, values)
            ce = -(values * torch.log(q.clamp_min(1e-8))).sum(dim=2)  # B × M
            per_set_counts = observed.sum(dim=0)  # M
            posterior_dim = 2
            p_true = p.unsqueeze(1)  # B × 1 × K
        else:
            p1 = torch.sigmoid(logits.float())  # B × N
            p = torch.stack([1 - p1, p1], dim=-1)  # B × N × 2
            q = torch.einsum("bnk,mnkl->bmnl", p, a)  # B × M × N × 2
            y = torch.stack([1 - values, values], dim=-1)
            likelihood = torch.einsum("mnkl,bmnl->bmnk", a, y)  # A_m[z, y_m] per finding: B × M × N × 2
            ce = -(y * torch.log(q.clamp_min(1e-8))).sum(dim=-1)  # B × M × N
            observed = mask
            per_set_counts = observed.sum(dim=(0, 2))  # M
            posterior_dim = 3
            p_true = p.unsqueeze(1)  # B × 1 × N × 2
        trace = a.diagonal(dim1=-2, dim2=-1).sum(-1).mean()
        # Σ over annotators of each annotator's mean CE over its observed labels.
        scale = observed / per_set_counts.clamp_min(1.0).view(1, -1, *([1] * (observed.dim() - 2)))
        # Hand labels are a trusted annotator: where an entry has one, the model learns it directly
        # (a CE weighted like an entry every set labels) and the noisy sets are left out there.
        hand, known = self._hand(batch, logits)
        if known is not None:
            scale = scale * (~known).to(scale.dtype).unsqueeze(1)
        annotator_loss = (ce * scale).sum()
        loss = annotator_loss + self.trace_weight * trace
        extras = {"annotator_loss": annotator_loss.detach(), "trace_loss": (self.trace_weight * trace).detach()}
        if known is not None:
            entry_weight = (1.0 / per_set_counts.clamp_min(1.0)).sum()
            if self.multiclass:
                hand_ce = -(torch.nan_to_num(hand) * torch.log_softmax(logits.float(), dim=1)).sum(dim=1)
            else:
                hand_ce = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(hand), reduction="none")
            hand_loss = entry_weight * (hand_ce * known.to(hand_ce.dtype)).sum()
            loss = loss + hand_loss
            extras["hand_loss"] = hand_loss.detach()
        # What the loss trains the model toward: d(loss)/d(logits) = Σ_m scale_m (p − r_m), with
        # r_m = p ⊙ A_m[:, y_m] / (p · A_m[:, y_m]) the posterior of the true label given set m's
        # label alone (the EM identity). So the target is the scale-weighted mean of the r_m and the
        # gradient equals that of Σ_entries (Σ_m scale_m) · CE(logits, target): the matrices'
        # current estimate of the true label, never the model's prediction copied back.
        with torch.no_grad():
            joint = p_true.detach() * likelihood.detach()
            r = joint / joint.sum(dim=-1, keepdim=True).clamp_min(1e-12)
            w = scale.unsqueeze(-1)
            total = w.sum(dim=1)
            target = (w * r).sum(dim=1) / total.clamp_min(1e-12)
            target = target[..., 1] if posterior_dim == 3 else target
            has = (total[..., 0] if posterior_dim == 3 else total[:, :1]) > 0
            target = trust_hand(batch, torch.where(has, target, torch.full_like(target, float("nan"))))
        return StrategyOutput(loss=loss, target=target, extras=extras)

    def _hand(self, batch: dict, logits: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The hand labels and where they exist: ``B × N`` entries (multi-label) or ``B`` rows (multi-class)."""
        hand = batch.get(HAND_KEY)
        if hand is None:
            return None, None
        hand = torch.as_tensor(hand, device=logits.device).float()
        known = ~torch.isnan(hand)
        known = known.all(dim=1) if self.multiclass else known
        return (hand, known) if known.any() else (None, None)


def consensus_targets(labels: np.ndarray, method: str, min_confidence: float, multiclass: bool) -> np.ndarray:
    """Confident consensus labels (``S × N``, NaN where not confident), fitted once on the training set.

    ``dawid_skene``: the Dawid–Skene posterior's most likely label where its probability is at
    least ``min_confidence``. ``majority``: the majority label where at least that fraction of
    the available sets agree (``1.0`` = unanimous; ``0.5`` = every entry, ties → 1).
    ``dawid_skene_posterior``: the posterior probability itself on every entry (multi-label;
    ``min_confidence`` unused), a soft anchor. ``dawid_skene_else_majority``: the confident
    Dawid–Skene decision where there is one, the majority vote elsewhere (a tie is 0.5 for
    multi-label sets, the expectation of a random tie; the first tied class for one-hot sets):
    a label on every entry, the control that tells a vote's gain from its anchor's.
    """
    labels = np.asarray(labels, dtype=np.float32)
    s, m, n = labels.shape
    if method == "dawid_skene_else_majority":
        confident = DawidSkene(multiclass=multiclass).aggregate(labels, min_confidence=min_confidence)
        majority = consensus_targets(labels, "majority", 0.0, multiclass)
        if not multiclass:
            present = ~np.isnan(labels)
            pos = (np.nan_to_num(labels) * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
            majority = np.where(np.isclose(pos, 0.5), np.float32(0.5), majority).astype(np.float32)
        decided = ~np.isnan(confident).any(axis=1, keepdims=True) if multiclass else ~np.isnan(confident)
        return np.where(decided, confident, majority).astype(np.float32)
    if method == "dawid_skene":
        return DawidSkene(multiclass=multiclass).aggregate(labels, min_confidence=min_confidence)
    if method == "dawid_skene_posterior":
        return DawidSkene(multiclass=multiclass).posterior(labels)
    if method != "majority":
        raise ValueError(f"unknown consensus {method!r}; choose dawid_skene, dawid_skene_posterior, "
                         "dawid_skene_else_majority or majority")
    present = ~np.isnan(labels)
    values = np.nan_to_num(labels)
    if multiclass:
        counts = values.sum(axis=1)  # S × K
        total = present.all(axis=2).sum(axis=1, keepdims=True)
        frac = counts / np.maximum(total, 1)
        best = frac.argmax(axis=1)
        out = np.eye(n, dtype=np.float32)[best]
        out[(frac.max(axis=1) < min_confidence) | (total[:, 0] == 0)] = np.nan
        return out
    total = present.sum(axis=1)
    pos = (values * present).sum(axis=1) / np.maximum(total, 1)
    out = (pos >= 0.5).astype(np.float32)
    agreement = np.maximum(pos, 1 - pos)
    out[(agreement < min_confidence) | (total == 0)] = np.nan
    return out


class Consensus(FittedTargets):
    """Train only where the label sets confidently agree (:func:`consensus_targets`); the rest is masked.

    The strongest label-only baseline on the multi-label testbed: no guess on a contested entry is
    better than a coin flip there. Its defaults (unanimous entries) were the anchored vote's anchor
    the default before the anchored vote; with ``consensus="dawid_skene", min_confidence=0.999`` it is today's anchor, so
    it shows what the vote adds on the contested entries.
    """

    name = "consensus"

    def __init__(self, multiclass: bool = False, consensus: str = "majority", min_confidence: float = 1.0) -> None:
        super().__init__(multiclass)
        self.consensus, self.min_confidence = consensus, min_confidence

    def aggregate(self, labels: np.ndarray) -> np.ndarray:
        return consensus_targets(labels, self.consensus, self.min_confidence, self.multiclass)


class ModelOverrule(Strategy):
    """Majority vote, overruled on contested entries by the model's own confident prediction.

    Where the label sets disagree on an entry (a finding, or a sample's class), and after
    ``warmup`` training steps the model's detached prediction is confident (probability of its
    decision ≥ ``confidence``), the model's decision is the target; everywhere else it is majority
    vote (``ties`` as in :class:`MajorityVote`). For one-hot data the model may only pick a class
    that some set gave. Unanimous entries are never overruled. It is hard bootstrapping (Reed et al.,
    2015, "Training deep neural networks on noisy labels with bootstrapping") restricted to the
    entries the sets contest, so what the model sees in each sample decides which set to trust
    there. No extra forward pass: it reads the step's own logits.
    """

    name = "overrule"

    def __init__(self, multiclass: bool = False, seed: int = 0, ties: str = "random", confidence: float = 0.9,
                 warmup: int = 200) -> None:
        super().__init__(multiclass)
        check_ties(ties, multiclass)
        if not 0.5 < confidence <= 1.0:
            raise ValueError(f"confidence must lie in (0.5, 1], got {confidence}")
        self.ties, self.confidence, self.warmup = ties, float(confidence), int(warmup)
        self.generator = torch.Generator().manual_seed(seed)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def overrule_mask(self, labels: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(use, decision)``: where the model's decision replaces majority vote, and that decision (``B × N``)."""
        values, mask = split_labels(labels)
        logits = logits.detach().float()
        if self.multiclass:
            counts = (values * mask).sum(dim=1)  # B × K
            total = mask[..., 0].sum(dim=1)
            probs = torch.softmax(logits, dim=1)
            conf, choice = probs.max(dim=1)
            allowed = counts.gather(1, choice[:, None])[:, 0] > 0
            use = (counts.max(dim=1).values < total) & (conf >= self.confidence) & allowed
            decision = F.one_hot(choice, logits.shape[1]).to(values.dtype)
            return use[:, None].expand_as(decision), decision
        n, pos = mask.sum(dim=1), (values * mask).sum(dim=1)
        p = torch.sigmoid(logits)
        use = (pos > 0) & (pos < n) & ((p >= self.confidence) | (p <= 1.0 - self.confidence))
        return use, (p >= 0.5).to(values.dtype)

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        target = majority_vote(batch["labels"], self.multiclass, self.generator, self.ties)
        if int(self.steps) >= self.warmup:
            use, decision = self.overrule_mask(batch["labels"], logits)
            target = torch.where(use, decision.to(target.dtype), target)
        if torch.is_grad_enabled():
            self.steps += 1
        return self._fixed_target_output(logits, trust_hand(batch, target))
