"""Learning-to-vote strategies: per-sample votes over the label sets, the math in :mod:`l2v_monai.strategies.vote`.

* :class:`PosteriorVote` (``label_strategy: "posterior_vote"``, the bundle's default) — each set
  weighed by its learned confusion table, the model's own prediction of the sample one more voter.
* ``label_strategy: "l2v"``, one class per variant:

  * :class:`PaperVote` (``variant: "paper"``) — the method as written in the paper, the faithful
    reproduction; its defaults are the paper's.
  * :class:`AnchoredVote` (``variant: "anchored"``) — a Dawid–Skene-anchored vote with a probe; its
    defaults are the ``strategy_options#l2v`` block of ``train.json`` and ``cifar10.json``.

  A config picks one with its ``variant`` key (:func:`vote_from_options`, called by
  :func:`~l2v_monai.strategies.build_strategy`), so switching variant is a one-key change.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from l2v_monai.labels import split_labels
from l2v_monai.strategies import vote as v
from l2v_monai.strategies.base import HAND_KEY, TARGET_KEY, Strategy, StrategyOutput, trust_hand
from l2v_monai.strategies.baselines import consensus_targets

__all__ = ["LearningToVote", "PaperVote", "AnchoredVote", "PosteriorVote", "VOTE_VARIANTS", "vote_from_options"]

logger = logging.getLogger(__name__)


class LearningToVote(Strategy):
    """What both variants share: virtual-step feedback per label set, a per-sample vote, its own learning rate.

    ``feedback`` names the per-set feedback of :func:`~l2v_monai.strategies.vote.virtual_step_feedback`
    (virtual steps of size ``alpha``); the vote's parameters train at ``vote_lr`` (None: the
    network's rate).
    """

    name = "l2v"
    #: The config's ``variant`` value for this class.
    variant = ""

    def __init__(self, multiclass: bool, alpha: float, feedback: str, vote_lr: float | None) -> None:
        super().__init__(multiclass)
        if feedback not in v.FEEDBACKS:
            raise ValueError(f"unknown feedback {feedback!r}; choose one of {sorted(v.FEEDBACKS)}")
        self.alpha, self.feedback, self.vote_lr = alpha, feedback, vote_lr

    def vote_parameters(self) -> list[nn.Parameter]:
        """The parameters trained at ``vote_lr``."""
        return list(self.head.parameters())

    def param_groups(self, network: nn.Module, lr: float) -> list[dict[str, Any]]:
        return [
            {"params": [p for p in network.parameters() if p.requires_grad], "lr": lr},
            {"params": self.vote_parameters(), "lr": self.vote_lr if self.vote_lr is not None else lr},
        ]

    def set_feedback(
        self, batch: dict, logits: torch.Tensor, features: torch.Tensor, network: nn.Module, grad_scale: float
    ) -> torch.Tensor:
        """Each label set's feedback ``F_m`` (``B × M × D``, detached)."""
        return v.virtual_step_feedback(
            self.feedback, network, batch["image"], batch.get("report_embedding"), logits, features, batch["labels"],
            self.alpha, grad_scale,
        )

    @staticmethod
    def _trusted(batch: dict, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The target with the hand labels in place (:func:`~l2v_monai.strategies.base.trust_hand`), and
        ``valid`` extended to every hand-labelled entry (one no set labels is still a label)."""
        if batch.get(HAND_KEY) is None:
            return target, valid
        hand = torch.as_tensor(batch[HAND_KEY], device=target.device).to(valid.dtype)
        return trust_hand(batch, target), torch.where(torch.isnan(hand), valid, torch.ones_like(valid))

    @staticmethod
    def _output(
        loss: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor, extras: dict[str, torch.Tensor]
    ) -> StrategyOutput:
        shown = torch.where(valid > 0, target, torch.full_like(target, float("nan")))
        return StrategyOutput(loss=loss, target=shown.detach(), weights=weights.detach(), extras=extras)


class PaperVote(LearningToVote):
    """The paper's learning-to-vote (§3.2, Algorithm 1), as written: the faithful reproduction.

    Feedback ``F_m`` (GAP features under ``θ_m``, Eq. 1), ``w = softmax(W_attn Cat(F_m) + b)`` with
    one weight per set (Eq. 2), ``ỹ = sigmoid(k(Σ w_m y_m − T))`` (Eq. 3) and the loss ``L_C(ŷ, ỹ)``
    back-propagated into θ and the vote head (ỹ not detached, Eq. 4–6). The defaults are the
    paper's: α = 0.2, k = 50, T = 0.5, feature feedback, the vote at the network's learning rate.
    ``feedback="gradients"`` is the paper's alternative feedback.
    """

    variant = "paper"

    def __init__(
        self,
        num_sets: int,
        feature_dim: int,
        multiclass: bool = False,
        alpha: float = 0.2,
        k: float = 50.0,
        threshold: float = 0.5,
        feedback: str = "features",
        vote_lr: float | None = None,
    ) -> None:
        super().__init__(multiclass, alpha, feedback, vote_lr)
        if feedback == "none":
            raise ValueError("the paper's vote reads the virtual steps' feedback alone; feedback='none' is for the anchored vote")
        self.k, self.threshold = k, threshold
        self.head = v.VoteHead(num_sets, feature_dim)

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        feedback = self.set_feedback(batch, logits, features, network, grad_scale)
        weights = self.head(feedback)
        ybar, valid = v.vote(weights, batch["labels"])
        # Hand labels replace the vote's label where present (no gradient reaches the vote there).
        target, valid = self._trusted(batch, v.binarize(ybar, self.k, self.threshold), valid)
        loss = v.masked_bce(logits, target, valid)
        # ỹ stays in the graph (Eq. 4–6): this one loss trains both the model and the vote.
        return self._output(loss, target, valid, weights, {"model_loss": loss.detach()})


class AnchoredVote(LearningToVote):
    """A Dawid–Skene-anchored vote: per-sample, per-finding weights that cannot win by confirming the model.

    It keeps the paper's structure (label sets → a per-sample vote → refined labels that train the
    model) but scores each (sample, set) from :func:`~l2v_monai.strategies.vote.set_descriptors` (a weight
    per set *per finding* for multi-label data) and trains the model on the refined labels (the
    vote's decisions with ``refined="hard"``, the mixture with ``"soft"``; softmax CE for one-hot
    data). The vote never sees the model's loss; what trains it is ``vote_objective``:

    * ``"probe"`` (default): an :class:`~l2v_monai.strategies.vote.AnchorProbe` (a linear classifier on the
      detached features, fitted to the anchor labels only) joins the vote's input, and the vote
      learns to agree with the anchor where a sample has one and with the probe where it has none
      (:func:`~l2v_monai.strategies.vote.anchor_agreement_loss`);
    * ``"meta"``: the bilevel objective :func:`~l2v_monai.strategies.vote.head_meta_loss`, a virtual step of
      the classifier head on the refined labels scored on other samples' anchor labels.

    The anchor is :func:`~l2v_monai.strategies.consensus_targets` (``consensus``,
    ``min_confidence``), fitted once before training. ``feedback="none"`` (default) skips the
    virtual steps; ``inputs`` keeps a subset of the vote's input (the ablations); ``no_finding``
    caps the refined "No Finding" output by the other findings (:func:`~l2v_monai.strategies.vote.no_finding_consistent`).
    ``seed`` seeds the meta objective's batch split. The defaults are the ``strategy_options#l2v``
    block of ``train.json`` and ``cifar10.json``.
    """

    variant = "anchored"
    VOTE_OBJECTIVES = ("meta", "probe")
    #: The size of the classifier head's virtual step in the meta objective.
    META_STEP = 1.0
    #: The width of the vote's :class:`~l2v_monai.strategies.vote.SetScorer`.
    HIDDEN = 64

    def __init__(
        self,
        num_sets: int,
        feature_dim: int,
        num_outputs: int,
        multiclass: bool = False,
        vote_objective: str = "probe",
        consensus: str = "dawid_skene",
        min_confidence: float = 0.999,
        refined: str = "hard",
        feedback: str = "none",
        vote_lr: float | None = 0.01,
        alpha: float = 0.2,
        inputs: Sequence[str] = v.VOTE_INPUTS,
        no_finding: int | None = None,
        no_finding_ignores: Sequence[int] = (),
        seed: int = 0,
    ) -> None:
        super().__init__(multiclass, alpha, feedback, vote_lr)
        self.consensus, self.min_confidence = consensus, min_confidence
        if refined not in ("hard", "soft"):
            raise ValueError(f"refined must be 'hard' or 'soft', got {refined!r}")
        self.refined = refined
        if vote_objective not in self.VOTE_OBJECTIVES:
            raise ValueError(f"unknown vote_objective {vote_objective!r}; choose one of {self.VOTE_OBJECTIVES}")
        self.vote_objective = vote_objective
        if no_finding is not None and (multiclass or not 0 <= no_finding < num_outputs):
            raise ValueError(f"no_finding={no_finding!r} needs multi-label data and an output index in [0, {num_outputs})")
        #: "No Finding"'s output index: its refined label is capped by the other findings' (None: off).
        self.no_finding, self.no_finding_ignores = no_finding, tuple(int(j) for j in no_finding_ignores)
        probe = vote_objective == "probe"
        per_output = 1 if multiclass else num_outputs
        #: Which parts of (sample, set) the vote reads (:data:`~l2v_monai.strategies.vote.VOTE_INPUTS`); ablations drop some.
        self.inputs = v.check_inputs(inputs)
        self.head = v.SetScorer(v.descriptor_dim(feature_dim, num_sets, num_outputs, multiclass, probe, self.inputs),
                                per_output, self.HIDDEN)
        # A module attribute, so it is checkpointed with the vote and trained at the vote's rate.
        self.probe = v.AnchorProbe(feature_dim, num_outputs) if probe else None
        self.generator = torch.Generator().manual_seed(seed)

    def vote_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters()) + (list(self.probe.parameters()) if self.probe is not None else [])

    def aggregate(self, labels: np.ndarray) -> np.ndarray:
        """The anchor labels, fitted once before training."""
        return consensus_targets(labels, self.consensus, self.min_confidence, self.multiclass)

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        if TARGET_KEY not in batch:
            raise KeyError(
                f"the anchored vote needs batch[{TARGET_KEY!r}], the anchor labels: build the training data "
                "with l2v_monai.strategies.attach_targets(items, strategy)"
            )
        labels = batch["labels"]
        feedback = self.set_feedback(batch, logits, features, network, grad_scale)
        _, mask = split_labels(labels)
        set_mask = mask[..., :1] if self.multiclass else mask
        # Hand labels are anchors (attach_targets put them into the target; trusted again for items built otherwise).
        anchor = trust_hand(batch, batch[TARGET_KEY].float())
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
        # Where a hand label exists it is the model's target; the vote still learns there (from the anchor).
        model_target, model_valid = self._trusted(batch, model_target, valid)
        model_loss = v.soft_loss(logits, model_target, model_valid, self.multiclass)
        extras = {"model_loss": model_loss.detach()}
        if self.probe is None:
            vote_loss = v.head_meta_loss(
                network.head, features, ybar, valid, anchor, self.multiclass, self.META_STEP, self.generator
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
        # The label the model loss trained toward (hardened when refined="hard"), not the mixture.
        return self._output(model_loss + vote_loss, model_target, model_valid, weights, extras)


class PosteriorVote(Strategy):
    """A vote whose weights are each set's learned confusion matrix, with the model's own prediction as one more voter.

    Per sample and finding (or over the classes, for one-hot data) the refined label is the
    posterior of the truth given every label set and the picture:
    ``q(k) ∝ P(k | x) · Π_m P(y_m | k)``, where ``P(k | x)`` is the model's current (detached)
    prediction and ``P(y_m | k)`` set m's confusion matrix (Raykar et al., *Learning From Crowds*,
    JMLR 2010; Dawid and Skene, 1979). The vote is therefore per sample: where the sets agree their
    likelihood decides; where they disagree, or a set known to be unreliable dissents, what the
    model sees in this sample decides which label to trust. The model trains on ``q`` (soft, or its
    decision with ``refined="hard"``).

    ``sets="joint"`` (the default for multi-label data with at most
    :data:`~l2v_monai.strategies.vote.MAX_JOINT_SETS` sets) keeps one table over the sets' joint answer
    per finding instead of one matrix per set (:func:`~l2v_monai.strategies.vote.joint_answers`): report
    label sets are two mappings of one labeler's "uncertain" and err together, which per-set matrices
    count twice. The table is shrunk toward the per-set matrices by ``shrinkage`` pseudo-items
    (:func:`~l2v_monai.strategies.vote.shrunk_joint_log_rates`), so a rare finding, with few items per
    class, falls back on the per-set rates.

    The tables start from one M-step on the majority vote (:meth:`aggregate`) and are re-estimated
    online from each batch's posteriors (soft counts with a memory of ``memory_epochs`` epochs;
    Cappé and Moulines, 2009), summed over DDP ranks. For the first ``warmup_epochs`` the model's
    prediction is replaced by the class frequencies (its early guesses are noise), so the vote starts
    as an online Dawid–Skene initialised at majority vote.

    Only entries whose posterior reaches ``min_confidence`` train the model (None: 0.9 for
    multi-label sets, 0 for one-hot ones): contested entries stay unlabelled, as in semi-supervised
    noisy-label training (e.g. DivideMix, Li et al., 2020), until the vote, the model's prediction
    included, settles them. Hand labels replace ``q`` where present, in the model's target and in the
    counts, and always train the model. All state is in buffers, so a resumed run continues from the
    counts it stopped at. The options' defaults are the ``strategy_options#posterior_vote`` block of
    ``train.json`` and ``cifar10.json``, chosen on the robustness suite (``docs/vote.md``).
    """

    name = "posterior_vote"

    def __init__(
        self,
        num_sets: int,
        num_outputs: int,
        multiclass: bool = False,
        warmup_epochs: float = 1.0,
        memory_epochs: float = 1.0,
        smoothing: float = 1.0,
        refined: str = "soft",
        sets: str = "auto",
        min_confidence: float | None = None,
        shrinkage: float = 20.0,
    ) -> None:
        super().__init__(multiclass)
        if sets == "auto":
            sets = "joint" if not multiclass and num_sets <= v.MAX_JOINT_SETS else "independent"
        if sets not in ("joint", "independent") or (sets == "joint" and multiclass):
            raise ValueError(f"sets must be 'independent', 'auto' or (multi-label only) 'joint', got {sets!r}")
        #: "joint": one confusion table over the sets' joint answer; "independent": one matrix per set.
        self.sets = sets
        if refined not in ("hard", "soft"):
            raise ValueError(f"refined must be 'hard' or 'soft', got {refined!r}")
        if warmup_epochs < 0 or memory_epochs <= 0 or smoothing <= 0:
            raise ValueError("warmup_epochs must be ≥ 0, memory_epochs and smoothing > 0, got "
                             f"{warmup_epochs}, {memory_epochs}, {smoothing}")
        if min_confidence is None:
            # Multi-label report sets miss faint findings together: their contested entries are
            # better left unlabelled than learned as 0.5. For one-hot data a threshold starves the
            # classes the sets confuse (they are never confident, so the model never votes for them).
            min_confidence = 0.0 if multiclass else 0.9
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence = float(min_confidence)
        self.refined, self.warmup_epochs, self.memory_epochs, self.smoothing = refined, warmup_epochs, memory_epochs, smoothing
        tasks, classes = (1, num_outputs) if multiclass else (num_outputs, 2)
        voters, answers = (1, 3**num_sets) if sets == "joint" else (num_sets, classes)
        self.register_buffer("counts", torch.zeros(tasks, voters, classes, answers))
        if not shrinkage > 0:
            # The per-set rates are the joint table's only prior: without them an answer never seen
            # for a class has probability 0, and a posterior of 0/0.
            raise ValueError(f"shrinkage must be > 0 (pseudo-items toward the per-set rates), got {shrinkage}")
        self.shrinkage = float(shrinkage)
        # The joint table's shrinkage target: each set's own rates over {nothing, 0, 1}.
        self.register_buffer("set_counts", torch.zeros(tasks, num_sets if sets == "joint" else 0, classes, 3))
        self.register_buffer("class_counts", torch.ones(tasks, classes))
        #: Training items (set by :meth:`aggregate`) and items seen so far, over all ranks.
        self.register_buffer("dataset_size", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.float64))
        # Whether the tables were started (by aggregate or a checkpoint): checked once, not every step.
        self._fitted = False

    def aggregate(self, labels: np.ndarray) -> None:
        """Start the confusion matrices from one M-step on the majority vote (the mean of the sets' labels)."""
        labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))
        votes = v.given_distributions(labels, self.multiclass)[0].sum(dim=2)
        given, mask = self._answers(labels)
        total = votes.sum(dim=-1, keepdim=True)
        start = torch.where(total > 0, votes / total.clamp_min(1e-12), torch.full_like(votes, 1.0 / votes.shape[-1]))
        counts, class_counts = v.posterior_statistics(start, given, mask)
        self.counts.copy_(counts)
        if self.sets == "joint":
            self.set_counts.copy_(v.posterior_statistics(start, *v.set_answers(labels))[0])
        self.class_counts.copy_(class_counts + 1.0)
        self.dataset_size.fill_(float(len(labels)))
        self.seen.zero_()
        self._fitted = True

    @torch.no_grad()
    def set_accuracy(self) -> np.ndarray:
        """Each set's estimated accuracy (``M``) under the learned tables, where it gives a label:
        ``Σ_k P(k) · P(says k | k)``, averaged over findings for multi-label sets."""
        counts = self.set_counts[..., 1:] if self.sets == "joint" else self.counts  # T × M × K × K
        rates = v.log_rates(counts, self.smoothing).exp()
        right = torch.diagonal(rates, dim1=-2, dim2=-1)  # T × M × K
        prior = self.class_counts / self.class_counts.sum(dim=-1, keepdim=True)  # T × K
        return (right * prior.unsqueeze(1)).sum(dim=-1).mean(dim=0).cpu().numpy()

    def _answers(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sets == "joint":
            return v.joint_answers(labels)
        return v.given_distributions(labels, self.multiclass)

    def _log_rates(self) -> torch.Tensor:
        if self.sets == "joint":
            return v.shrunk_joint_log_rates(self.counts, self.set_counts, self.shrinkage, self.smoothing)
        return v.log_rates(self.counts, self.smoothing)

    def _all_reduce(self, *tensors: torch.Tensor) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in tensors:
                torch.distributed.all_reduce(t)

    def forward(self, batch, logits, features, network, grad_scale=1.0):
        if not self._fitted:
            if self.dataset_size.item() <= 0:
                raise RuntimeError(
                    "the posterior vote starts from the training label sets: build the training data with "
                    "l2v_monai.strategies.attach_targets(items, strategy)"
                )
            self._fitted = True
        labels = batch["labels"].to(logits.device)
        given, mask = self._answers(labels.float())
        likelihood = v.set_log_likelihood(given, mask, self._log_rates())
        # Tensors, not Python numbers: no device-to-host sync on the training step.
        warm = self.seen >= self.warmup_epochs * self.dataset_size
        frequencies = torch.log(self.class_counts / self.class_counts.sum(dim=-1, keepdim=True)).unsqueeze(0)
        prior = torch.where(warm, v.model_log_prior(logits, self.multiclass), frequencies)
        posterior = torch.softmax(likelihood + prior, dim=-1)
        valid = (mask.sum(dim=2) > 0).to(logits.dtype)
        if self.multiclass:
            target, valid = posterior[:, 0], valid.expand(-1, posterior.shape[-1])
        else:
            target = posterior[..., 1]
        if self.refined == "hard":
            target = v.harden(target, self.multiclass)
        target, valid = LearningToVote._trusted(batch, target, valid)
        # Contested entries train nothing until the vote, the model's prediction included, settles
        # them: a soft 0.5 learned there would come back as the model's own prior and settle nothing.
        confident = posterior.amax(dim=-1) >= self.min_confidence
        confident = confident.expand(-1, posterior.shape[-1]) if self.multiclass else confident
        model_valid = LearningToVote._trusted(batch, target, valid * confident.to(valid.dtype))[1]
        loss = v.soft_loss(logits, target, model_valid, self.multiclass)
        if self.training:
            self._update_counts(target, given, mask, labels)
        extras = {"model_loss": loss.detach()}
        shown = torch.where(valid > 0, target, torch.full_like(target, float("nan")))
        return StrategyOutput(loss=loss, target=shown.detach(), extras=extras)

    @torch.no_grad()
    def _update_counts(self, target: torch.Tensor, given: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> None:
        """One online M-step: blend this batch's soft counts (scaled to the dataset) into the running counts."""
        posterior = target.unsqueeze(1) if self.multiclass else torch.stack([1 - target, target], dim=-1)
        # A non-finite posterior (NaN logits) stops the run at this step (the trainer's check): it adds
        # nothing to the tables, which the last good checkpoint holds; every DDP rank still joins the
        # all-reduce below, so that no rank waits on another.
        finite = torch.isfinite(posterior).all()
        posterior = torch.where(finite, torch.nan_to_num(posterior.float()), torch.zeros_like(posterior, dtype=torch.float32))
        counts, class_counts = v.posterior_statistics(posterior, given, mask)
        set_counts = v.posterior_statistics(posterior, *v.set_answers(labels.float()))[0] if self.sets == "joint" else None
        seen = finite.to(torch.float64) * len(labels)
        self._all_reduce(counts, class_counts, seen, *([set_counts] if set_counts is not None else []))
        # Blend with weight rate = min(1, seen / (memory · size)); the batch counts, scaled to the
        # dataset, enter with rate · size / seen. Both share one denominator, so a step that saw
        # nothing (seen = 0) changes nothing and needs no branch.
        denominator = torch.maximum(seen, self.memory_epochs * self.dataset_size)
        rate, factor = seen / denominator, self.dataset_size / denominator
        for table, batch_counts in ((self.counts, counts), (self.class_counts, class_counts), (self.set_counts, set_counts)):
            if batch_counts is not None:
                table.mul_(1 - rate).add_(batch_counts * factor)
        self.seen.add_(seen)


#: The config's ``variant`` → its class.
VOTE_VARIANTS: dict[str, type[LearningToVote]] = {cls.variant: cls for cls in (PaperVote, AnchoredVote)}


def _takes(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def vote_from_options(variant: str = AnchoredVote.variant, **kwargs: Any) -> LearningToVote:
    """The vote named by ``variant`` (``"anchored"`` when absent), built from one ``strategy_options#l2v`` block.

    The block may hold the other variant's settings too (``--strategy_options#l2v#variant paper``
    switches a block written for the anchored vote): those are left out, and named in the log. A key
    that no variant takes is an error.
    """
    if variant not in VOTE_VARIANTS:
        raise ValueError(f"unknown l2v variant {variant!r}; choose one of {sorted(VOTE_VARIANTS)}")
    cls = VOTE_VARIANTS[variant]
    known = set().union(*(_takes(c) for c in VOTE_VARIANTS.values()))
    unknown = sorted(set(kwargs) - known)
    if unknown:
        options = sorted(known - {"num_sets", "feature_dim", "num_outputs", "multiclass"})
        raise ValueError(f"unknown l2v option(s) {unknown}; the variants take {options} and 'variant'")
    takes = _takes(cls)
    unused = sorted(set(kwargs) - takes - {"num_outputs"})
    if unused:
        logger.info("l2v variant %r does not use option(s) %s (the other variant's); left out", variant, unused)
    return cls(**{key: value for key, value in kwargs.items() if key in takes})
