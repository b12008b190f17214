"""Label strategies: how a batch's M label sets become one training loss.

Every strategy is an ``nn.Module`` with one entry point,
``forward(batch, logits, features, network) -> StrategyOutput``, so the trainer never branches
on which one it runs. Strategies with learnable parameters (the vote head, confusion matrices)
expose them through :meth:`Strategy.param_groups`, which the optimizer is built from.

* ``single`` — one named label set.
* ``majority`` — majority vote; ties broken at random per iteration (as the paper does), or set to 1
  (``ties="positive"``), or left out (``"nan"``).
* ``mean`` — the soft average of the available label sets.
* ``dawid_skene`` — Dawid–Skene aggregation (crowd-kit), fitted once before training.
* ``cm`` — Tanno et al. (2019): a learnable confusion matrix per annotator.
* ``consensus`` — only the entries where the sets confidently agree (unanimous by default).
* ``l2v`` — learning-to-vote (:mod:`l2v_monai.vote`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from l2v_monai import vote as v
from l2v_monai.data.validation import stack_labels

__all__ = [
    "StrategyOutput",
    "Strategy",
    "SingleLabelSet",
    "MajorityVote",
    "MeanLabel",
    "FittedTargets",
    "DawidSkene",
    "ConfusionMatrices",
    "Consensus",
    "LearningToVote",
    "STRATEGIES",
    "build_strategy",
    "attach_targets",
    "majority_vote",
    "noisy_target",
]


@dataclass
class StrategyOutput:
    """What a strategy returns for one batch.

    ``target`` (``B × N``, NaN where undefined, detached) is exactly the label the model's loss
    trained toward: ``loss == masked_bce(logits, target)`` (or the soft CE for one-hot data) for the
    fixed-target strategies and ``l2v`` paper; ``extras["model_loss"]`` is that loss for anchored
    ``l2v`` (whose total adds the vote's terms); for ``cm`` the gradient of the loss in the logits is
    that of a weighted CE against ``target`` (see :class:`ConfusionMatrices`).
    ``weights`` the vote weights when the strategy votes; ``extras`` the loss's named terms as
    detached scalars (``model_loss``, ``vote_loss``, ``probe_loss``, ``annotator_loss``...), for logging.
    """

    loss: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Strategy(nn.Module):
    """Base class. ``multiclass`` means one-hot label sets (the CIFAR proof of concept)."""

    #: Name used in configs and results.
    name: str = "strategy"

    def __init__(self, multiclass: bool = False) -> None:
        super().__init__()
        self.multiclass = multiclass

    def param_groups(self, network: nn.Module, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: the network's, plus the strategy's own when it has any."""
        groups: list[dict[str, Any]] = [{"params": [p for p in network.parameters() if p.requires_grad], "lr": lr}]
        own = [p for p in self.parameters() if p.requires_grad]
        if own:
            groups.append({"params": own, "lr": lr})
        return groups

    def aggregate(self, labels: np.ndarray) -> np.ndarray | None:
        """Dataset-level targets (``S × N``) fitted once before training, or None for on-the-fly strategies."""
        return None

    def forward(self, batch: dict, logits: torch.Tensor, features: torch.Tensor, network: nn.Module) -> StrategyOutput:
        raise NotImplementedError

    def _fixed_target_output(self, logits: torch.Tensor, target: torch.Tensor) -> StrategyOutput:
        return StrategyOutput(loss=v.masked_bce(logits, target), target=target.detach())


#: Tie rules of :func:`majority_vote`: a fresh coin per call, ties → 1 (multi-label only), or NaN.
MAJORITY_TIES = ("random", "positive", "one", "nan")


def _one_hot_argmax(scores: torch.Tensor, valid: torch.Tensor, generator: torch.Generator | None, ties: str) -> torch.Tensor:
    """One-hot of the row-wise argmax; ties broken at random (``ties="random"``) or left NaN; rows with no votes are NaN."""
    top = scores.max(dim=1, keepdim=True).values
    tied = (scores == top).float()
    noise = torch.rand(scores.shape, generator=generator, device="cpu").to(scores.device)
    pick = (tied * (noise + 1.0)).argmax(dim=1)
    out = F.one_hot(pick, scores.shape[1]).to(scores.dtype)
    keep = valid > 0
    if ties == "nan":
        keep = keep & (tied.sum(dim=1) == 1)
    return torch.where(keep.unsqueeze(1), out, torch.full_like(out, float("nan")))


def _check_ties(ties: str, multiclass: bool) -> None:
    if ties not in MAJORITY_TIES:
        raise ValueError(f"ties must be one of {MAJORITY_TIES}, got {ties!r}")
    if multiclass and ties in ("positive", "one"):
        raise ValueError(f"ties={ties!r} (ties → 1) is for multi-label sets; one-hot classes have no positive side")


def majority_vote(
    labels: torch.Tensor, multiclass: bool, generator: torch.Generator | None = None, ties: str = "random"
) -> torch.Tensor:
    """Majority vote over label sets (``B × M × N`` → ``B × N``); NaN where no set votes.

    Multi-class: the class with most votes. Multi-label: per finding, 1 if more sets say 1 than 0.
    Ties are broken uniformly at random (``ties="random"``, the paper's MV), set to 1
    (``"positive"`` or its alias ``"one"``, multi-label only: a finding that half the sets report
    is ranked above the clear negatives) or left NaN (``"nan"``, for deterministic evaluation).
    """
    _check_ties(ties, multiclass)
    values, mask = v.split_labels(labels)
    if multiclass:
        counts = (values * mask).sum(dim=1)
        valid = (mask.sum(dim=(1, 2)) > 0).to(values.dtype)
        return _one_hot_argmax(counts, valid, generator, ties)
    pos = (values * mask).sum(dim=1)
    neg = ((1 - values) * mask).sum(dim=1)
    if ties == "random":
        tie = (torch.rand(pos.shape, generator=generator, device="cpu").to(pos.device) < 0.5).to(pos.dtype)
    elif ties == "nan":
        tie = torch.full_like(pos, float("nan"))
    else:
        tie = torch.ones_like(pos)
    out = torch.where(pos > neg, 1.0, torch.where(neg > pos, 0.0, tie))
    return torch.where(mask.sum(dim=1) > 0, out, torch.full_like(out, float("nan")))


NOISY_TARGETS = ("majority", "mean")


def noisy_target(labels: torch.Tensor, target: str, multiclass: bool = False) -> torch.Tensor:
    """A deterministic per-item label from noisy sets (``B × M × N`` → ``B × N``), for evaluation.

    ``"majority"``: :func:`majority_vote` with ties left NaN, so only items with a majority are
    scored; ``"mean"``: the mean of the available sets. Used by the evaluator's batch preparation
    and by the start-up check that asks whether validation can be scored at all.
    """
    if target == "mean":
        return torch.nanmean(labels, dim=1)
    if target == "majority":
        return majority_vote(labels, multiclass, ties="nan")
    raise ValueError(f"unknown noisy evaluation target {target!r}; choose one of {NOISY_TARGETS}")


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

    def forward(self, batch, logits, features, network):
        return self._fixed_target_output(logits, batch["labels"][:, self.index])


class MajorityVote(Strategy):
    """Majority vote, recomputed each iteration.

    ``ties="random"`` (default, the paper's MV) gives each tie a fresh seeded coin per iteration;
    ``"positive"``/``"one"`` labels multi-label ties 1; ``"nan"`` leaves ties out of the loss.
    """

    name = "majority"

    def __init__(self, multiclass: bool = False, seed: int = 0, ties: str = "random") -> None:
        super().__init__(multiclass)
        _check_ties(ties, multiclass)
        self.ties = ties
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, batch, logits, features, network):
        return self._fixed_target_output(logits, majority_vote(batch["labels"], self.multiclass, self.generator, self.ties))


class MeanLabel(Strategy):
    """The soft average of the available label sets (equal weights, the untrained vote)."""

    name = "mean"

    def forward(self, batch, logits, features, network):
        labels = batch["labels"]
        uniform = torch.full(labels.shape[:2], 1.0 / labels.shape[1], device=labels.device)
        ybar, valid = v.vote(uniform, labels)
        return self._fixed_target_output(logits, torch.where(valid > 0, ybar, torch.full_like(ybar, float("nan"))))


class FittedTargets(Strategy):
    """A strategy whose targets are fitted once, before training (:meth:`aggregate`), and travel
    with the data items under ``target_key`` (see :func:`attach_targets`); the step only reads them."""

    def __init__(self, multiclass: bool = False, target_key: str = "target") -> None:
        super().__init__(multiclass)
        self.target_key = target_key

    def forward(self, batch, logits, features, network):
        if self.target_key not in batch:
            raise KeyError(
                f"{self.name} needs batch[{self.target_key!r}]: build the training data with "
                "l2v_monai.strategies.attach_targets(items, strategy) so the fitted targets travel with the items"
            )
        return self._fixed_target_output(logits, batch[self.target_key].float())


class DawidSkene(FittedTargets):
    """Dawid–Skene (1979) via crowd-kit, fitted once on the whole training set (per finding when multi-label).

    The fitted targets travel with the data items (key ``target``, see :func:`attach_targets`);
    the training step only reads them.
    """

    name = "dawid_skene"

    def __init__(self, multiclass: bool = False, n_iter: int = 100, target_key: str = "target") -> None:
        super().__init__(multiclass, target_key)
        self.n_iter = n_iter

    def _fit(self, tasks: np.ndarray, workers: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fit Dawid–Skene on ``(task, worker, label)`` triples; return the fitted tasks, the label
        values (columns) and the posterior, ``tasks × values``."""
        import pandas as pd
        from crowdkit.aggregation import DawidSkene as CrowdKitDS

        df = pd.DataFrame({"task": tasks, "worker": workers, "label": values})
        proba = CrowdKitDS(n_iter=self.n_iter).fit_predict_proba(df)
        return proba.index.to_numpy(), proba.columns.to_numpy().astype(int), proba.to_numpy()

    def _per_finding(self, labels: np.ndarray, read: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        """Fit each finding of multi-label sets on its own; ``read(values, posterior)`` gives the output
        per fitted task. ``S × N``, NaN where no set has a label; a finding every set labels alike keeps
        that label (Dawid–Skene has nothing to estimate there)."""
        labels = np.asarray(labels, dtype=np.float32)
        s, _, n = labels.shape
        out = np.full((s, n), np.nan, dtype=np.float32)
        for j in range(n):
            tasks, workers = np.nonzero(~np.isnan(labels[:, :, j]))
            if not len(tasks):
                continue
            values = labels[tasks, workers, j].astype(int)
            if len(np.unique(values)) == 1:
                out[tasks, j] = values
                continue
            fitted, classes, proba = self._fit(tasks, workers, values)
            out[fitted, j] = read(classes, proba)
        return out

    def posterior(self, labels: np.ndarray) -> np.ndarray:
        """Dawid–Skene's posterior ``P(y = 1)`` per (sample, finding), ``S × N`` (multi-label only).

        A calibrated probability rather than a decision: each set's per-finding sensitivity and
        specificity, estimated from all the sets together, weigh its vote. NaN only where no set
        has a label; a finding every set labels alike keeps that label.
        """
        if self.multiclass:
            raise ValueError("dawid_skene_posterior is for multi-label sets; use dawid_skene for one-hot data")
        return self._per_finding(
            labels, lambda classes, proba: proba[:, list(classes).index(1)] if 1 in classes else np.zeros(len(proba))
        )

    def aggregate(self, labels: np.ndarray, min_confidence: float = 0.0) -> np.ndarray:
        """Per-sample Dawid–Skene labels (``S × N``); NaN where the posterior is below ``min_confidence``."""

        def decide(classes: np.ndarray, proba: np.ndarray) -> np.ndarray:
            best = classes[proba.argmax(axis=1)]
            return np.where(proba.max(axis=1) >= min_confidence, best, np.nan)

        if not self.multiclass:
            return self._per_finding(labels, decide)
        labels = np.asarray(labels, dtype=np.float32)
        s, _, n = labels.shape
        out = np.full((s, n), np.nan, dtype=np.float32)
        # One-hot sets → class index per (task, worker); a missing set has an all-NaN row.
        tasks, workers = np.nonzero(~np.isnan(labels).any(axis=2))
        if len(tasks):
            classes = np.nan_to_num(labels).argmax(axis=2)[tasks, workers]
            fitted, values, proba = self._fit(tasks, workers, classes)
            best = decide(values, proba)
            rows = np.full((len(fitted), n), np.nan, dtype=np.float32)
            confident = ~np.isnan(best)
            rows[confident] = np.eye(n, dtype=np.float32)[best[confident].astype(int)]
            out[fitted] = rows
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

    def forward(self, batch, logits, features, network):
        labels = batch["labels"]
        values, mask = v.split_labels(labels)
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
        annotator_loss = (ce * scale).sum()
        loss = annotator_loss + self.trace_weight * trace
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
            target = torch.where(has, target, torch.full_like(target, float("nan")))
        extras = {"annotator_loss": annotator_loss.detach(), "trace_loss": (self.trace_weight * trace).detach()}
        return StrategyOutput(loss=loss, target=target, extras=extras)


def consensus_targets(labels: np.ndarray, method: str, min_confidence: float, multiclass: bool) -> np.ndarray:
    """Confident consensus labels (``S × N``, NaN where not confident), fitted once on the training set.

    ``dawid_skene``: the Dawid–Skene posterior's most likely label where its probability is at
    least ``min_confidence``. ``majority``: the majority label where at least that fraction of
    the available sets agree (``1.0`` = unanimous; ``0.5`` = every entry, ties → 1).
    ``dawid_skene_posterior``: the posterior probability itself on every entry (multi-label;
    ``min_confidence`` unused), a soft anchor.
    """
    labels = np.asarray(labels, dtype=np.float32)
    s, m, n = labels.shape
    if method == "dawid_skene":
        return DawidSkene(multiclass=multiclass).aggregate(labels, min_confidence=min_confidence)
    if method == "dawid_skene_posterior":
        return DawidSkene(multiclass=multiclass).posterior(labels)
    if method != "majority":
        raise ValueError(f"unknown consensus {method!r}; choose dawid_skene, dawid_skene_posterior or majority")
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
    better than a coin flip there. With the defaults it is the anchor the ``l2v`` anchored
    variant starts from, so it shows what the vote adds on the contested entries.
    """

    name = "consensus"

    def __init__(
        self, multiclass: bool = False, consensus: str = "majority", min_confidence: float = 1.0, target_key: str = "target"
    ) -> None:
        super().__init__(multiclass, target_key)
        self.consensus, self.min_confidence = consensus, min_confidence

    def aggregate(self, labels: np.ndarray) -> np.ndarray:
        return consensus_targets(labels, self.consensus, self.min_confidence, self.multiclass)


class LearningToVote(Strategy):
    """Learning-to-vote: virtual steps per label set → per-sample vote → refined labels (Alg. 1).

    ``variant="paper"`` is the method as written: feedback ``F_m`` (GAP features under ``θ_m``),
    ``w = softmax(W_attn Cat(F_m) + b)`` with one weight per set, ``ỹ = sigmoid(k(Σ w_m y_m − T))``
    and the loss ``L_C(ŷ, ỹ)`` back-propagated into θ and the vote head (ỹ not detached, Eq. 4–6).

    ``variant="anchored"`` keeps the virtual steps and the per-sample vote but scores each
    (sample, set) from :func:`~l2v_monai.vote.set_descriptors` (a weight per set *per finding*
    for multi-label data) and trains the model on the refined labels (hard decisions by default,
    ``refined="soft"`` for the mixture; softmax CE for one-hot data). The vote never sees the
    model's loss; what trains it is ``vote_objective``:

    * ``"meta"``: the bilevel objective :func:`~l2v_monai.vote.head_meta_loss`, a virtual step
      on the refined labels scored on other samples' confident consensus labels;
    * ``"probe"``: an :class:`~l2v_monai.vote.AnchorProbe` (a linear classifier on the features,
      fitted to the consensus labels only) joins the vote's input, and the vote is trained to
      agree with the consensus where a sample has one and with the probe where it has none
      (:func:`~l2v_monai.vote.anchor_agreement_loss`).

    ``k`` and ``threshold`` are unused there: no binarization, so no all-zero targets.
    """

    name = "l2v"
    VARIANTS = ("paper", "anchored")
    VOTE_OBJECTIVES = ("meta", "probe")

    def __init__(
        self,
        num_sets: int,
        feature_dim: int,
        num_outputs: int,
        multiclass: bool = False,
        alpha: float = 0.2,
        k: float = 50.0,
        threshold: float = 0.5,
        feedback: str = "features",
        variant: str = "paper",
        vote_lr: float | None = None,
        consensus: str = "dawid_skene",
        min_confidence: float = 0.9,
        meta_step: float = 1.0,
        hidden: int = 64,
        refined: str = "hard",
        vote_objective: str = "meta",
        target_key: str = "target",
        seed: int = 0,
        no_finding: int | None = None,
        no_finding_ignores: Sequence[int] = (),
        inputs: Sequence[str] = v.VOTE_INPUTS,
    ) -> None:
        super().__init__(multiclass)
        if variant not in self.VARIANTS:
            raise ValueError(f"unknown l2v variant {variant!r}; choose one of {self.VARIANTS}")
        if feedback not in v.FEEDBACKS:
            raise ValueError(f"unknown feedback {feedback!r}; choose one of {sorted(v.FEEDBACKS)}")
        if variant == "paper" and feedback == "none":
            raise ValueError("the paper variant votes from the virtual steps' feedback alone; feedback='none' is for 'anchored'")
        self.alpha, self.k, self.threshold = alpha, k, threshold
        self.feedback, self.variant, self.vote_lr = feedback, variant, vote_lr
        self.consensus, self.min_confidence, self.meta_step = consensus, min_confidence, meta_step
        if refined not in ("hard", "soft"):
            raise ValueError(f"refined must be 'hard' or 'soft', got {refined!r}")
        self.refined = refined
        if vote_objective not in self.VOTE_OBJECTIVES:
            raise ValueError(f"unknown vote_objective {vote_objective!r}; choose one of {self.VOTE_OBJECTIVES}")
        self.vote_objective = vote_objective
        self.target_key = target_key
        if no_finding is not None and (multiclass or variant != "anchored" or not 0 <= no_finding < num_outputs):
            raise ValueError(f"no_finding={no_finding!r} needs the anchored variant on multi-label data and an output index "
                             f"in [0, {num_outputs})")
        #: "No Finding"'s output index: its refined label is capped by the other findings' (None: off).
        self.no_finding, self.no_finding_ignores = no_finding, tuple(int(j) for j in no_finding_ignores)
        probe = variant == "anchored" and vote_objective == "probe"
        if variant == "paper":
            self.head: nn.Module = v.VoteHead(num_sets, feature_dim, num_outputs)
        else:
            per_output = 1 if multiclass else num_outputs
            #: Which parts of (sample, set) the vote reads (:data:`~l2v_monai.vote.VOTE_INPUTS`); ablations drop some.
            self.inputs = v.check_inputs(inputs)
            self.head = v.SetScorer(v.descriptor_dim(feature_dim, num_sets, num_outputs, multiclass, probe, self.inputs),
                                    per_output, hidden)
        # A module attribute, so it is checkpointed with the vote and trained at the vote's rate.
        self.probe = v.AnchorProbe(feature_dim, num_outputs) if probe else None
        self.generator = torch.Generator().manual_seed(seed)
        #: Set by the trainer under AMP so inner gradients are taken on the scaled loss.
        self.grad_scale = 1.0

    def param_groups(self, network: nn.Module, lr: float) -> list[dict[str, Any]]:
        return [
            {"params": [p for p in network.parameters() if p.requires_grad], "lr": lr},
            {"params": list(self.head.parameters()) + (list(self.probe.parameters()) if self.probe is not None else []),
             "lr": self.vote_lr if self.vote_lr is not None else lr},
        ]

    def aggregate(self, labels: np.ndarray) -> np.ndarray | None:
        """The anchored variant's consensus labels, fitted once; the paper variant needs none."""
        if self.variant == "paper":
            return None
        return consensus_targets(labels, self.consensus, self.min_confidence, self.multiclass)

    def forward(self, batch, logits, features, network):
        labels = batch["labels"]
        feedback = v.virtual_step_feedback(
            self.feedback, network, batch["image"], batch.get("report_embedding"), logits, features, labels,
            self.alpha, self.grad_scale,
        )
        if self.variant == "paper":
            weights = self.head(feedback)
            ybar, valid = v.vote(weights, labels)
            target = v.binarize(ybar, self.k, self.threshold)
            loss = v.masked_bce(logits, target, valid)
            # ỹ stays in the graph (Eq. 4–6): this one loss trains both the model and the vote.
            extras: dict[str, torch.Tensor] = {"model_loss": loss.detach()}
        else:
            if self.target_key not in batch:
                raise KeyError(
                    f"l2v (anchored) needs batch[{self.target_key!r}], the consensus labels: build the training data "
                    "with l2v_monai.strategies.attach_targets(items, strategy)"
                )
            _, mask = v.split_labels(labels)
            set_mask = mask[..., :1] if self.multiclass else mask
            anchor = batch[self.target_key].float()
            probe_logits = self.probe(features) if self.probe is not None else None
            descriptors = v.set_descriptors(features, feedback, labels, logits, self.multiclass, probe_logits, self.inputs)
            weights = self.head(descriptors, set_mask)
            weights = weights[..., 0] if self.multiclass else weights
            ybar, valid = v.vote(weights, labels)
            # The model learns from the refined labels; the vote learns only from the anchor.
            # "hard" takes the vote's decision (argmax, or ȳ ≥ 0.5 per finding): a soft mixture of
            # structured-noise labels teaches the model the noise structure along with the class.
            model_target = v.harden(ybar.detach(), self.multiclass) if self.refined == "hard" else ybar.detach()
            if self.no_finding is not None:
                model_target = v.no_finding_consistent(model_target, self.no_finding, self.no_finding_ignores)
            model_loss = v.soft_loss(logits, model_target, valid, self.multiclass)
            extras = {"model_loss": model_loss.detach()}
            if self.probe is None:
                vote_loss = v.head_meta_loss(
                    network.head, features, ybar, valid, anchor, self.multiclass, self.meta_step, self.generator
                )
                extras["meta_loss"] = vote_loss.detach()
            else:
                # The probe learns from the anchors; the vote learns to agree with the anchor where a
                # sample has one and with the probe where it has none.
                probe_loss = self.probe.loss(probe_logits, anchor, self.multiclass)
                agreement = v.anchor_agreement_loss(ybar, valid, anchor, probe_logits, self.multiclass)
                vote_loss = probe_loss + agreement
                extras.update(probe_loss=probe_loss.detach(), agreement_loss=agreement.detach())
            extras["vote_loss"] = vote_loss.detach()
            loss = model_loss + vote_loss
            # The label the model loss trained toward (hardened when refined="hard"), not the mixture.
            target = model_target
        shown = torch.where(valid > 0, target, torch.full_like(target, float("nan")))
        return StrategyOutput(loss=loss, target=shown.detach(), weights=weights.detach(), extras=extras)


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (SingleLabelSet, MajorityVote, MeanLabel, DawidSkene, ConfusionMatrices, Consensus, LearningToVote)
}


def build_strategy(
    name: str,
    *,
    num_sets: int,
    num_outputs: int,
    feature_dim: int,
    multiclass: bool = False,
    label_sets: Sequence[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> Strategy:
    """Build the strategy selected by one config key (``label_strategy``).

    ``options`` maps a strategy name to its keyword arguments, so a bundle config keeps every
    strategy's settings side by side and switching strategy is a one-key change.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown label_strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    kwargs = dict((options or {}).get(name, {}))
    kwargs["multiclass"] = multiclass
    if name == "single":
        kwargs.setdefault("label_sets", label_sets)
    if name in ("cm", "l2v"):
        kwargs.update(num_sets=num_sets, num_outputs=num_outputs)
    if name == "l2v":
        kwargs["feature_dim"] = feature_dim
    return STRATEGIES[name](**kwargs)


def attach_targets(
    items: list[dict],
    strategy: Strategy,
    labels_key: str = "labels",
    target_key: str = "target",
    num_sets: int | None = None,
    num_outputs: int | None = None,
    split: str = "training",
) -> list[dict]:
    """Return the items with dataset-level targets attached when the strategy fits them (Dawid–Skene).

    For on-the-fly strategies the items are returned unchanged. Fitting happens here, once,
    before training, so the training step never re-aggregates the dataset. Every item's labels are
    checked first (``num_sets × num_outputs`` when given, values in [0, 1] or null): a bad item is
    a ``LabelValueError`` naming it by split, index and image, not a bare numpy error.
    """
    if not items:
        return items
    stacked = stack_labels(items, labels_key, (num_sets, num_outputs), split=split)
    targets = strategy.aggregate(stacked)
    if targets is None:
        return items
    return [{**it, target_key: t} for it, t in zip(items, targets)]
