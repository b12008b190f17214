"""Learning-to-vote (Wang et al., WACV 2024, §3.2 and Algorithm 1): the single home of its math.

Everything here works on the project's label-set contract: ``labels`` is a float tensor
``B × M × N`` (M label sets, N findings or one-hot classes) with NaN for "no label". The strategies
that use it are :class:`~l2v_monai.strategies.PosteriorVote` (the bundle's default),
:class:`~l2v_monai.strategies.PaperVote` and :class:`~l2v_monai.strategies.AnchoredVote`.

The paper's pieces (:class:`~l2v_monai.strategies.PaperVote`), in the order Algorithm 1 uses them:

* :func:`virtual_step_feedback` — Eq. 1: for each label set m, a virtual step
  ``θ_m = θ − α ∇_θ L_C(ŷ, y_m)`` and the feedback ``F_m`` of the batch under ``θ_m``
  (:func:`feature_feedback`, GAP features, by default; :func:`gradient_feedback`, per-sample
  feature gradients, as the paper's alternative; :func:`no_feedback` skips the step).
  Nothing real changes: parameters, optimizer state and BatchNorm statistics stay as they were.
* :class:`VoteHead` — Eq. 2: ``w = softmax(W_attn · Cat(F_1..F_M) + b_attn)``.
* :func:`vote` — Eq. 3 first half: ``ȳ = Σ_m w_m y_m``, renormalised over the sets that have a value.
* :func:`binarize` — Eq. 3: ``ỹ = sigmoid(k (ȳ − T))``.
* :func:`masked_bce` — the loss ``L_C`` of §3.1, averaged over observed entries.

The anchored vote (:class:`~l2v_monai.strategies.AnchoredVote`) reuses the
feedback and :func:`vote`, and adds :func:`set_descriptors` (what the vote reads per sample and
set, :data:`VOTE_INPUTS`), :class:`SetScorer` (the per-finding attention), :class:`AnchorProbe`
with :func:`anchor_agreement_loss` (the ``probe`` objective, the default) or :func:`head_meta_loss`
(the ``meta`` objective), :func:`harden`, :func:`soft_loss` (the model's loss on the refined
labels) and :func:`no_finding_consistent` (the "No Finding" cap).

The posterior vote (:class:`~l2v_monai.strategies.PosteriorVote`, the bundle's default) weighs each set by a learned
confusion matrix (Dawid and Skene, 1979) and lets the model's own prediction of the sample vote
too (Raykar et al., *Learning From Crowds*, JMLR 2010), with the confusion matrices re-estimated
online from every batch's posteriors (online EM, Cappé and Moulines, 2009):
:func:`given_distributions` (or :func:`joint_answers`, shrunk toward :func:`set_answers`' per-set
rates by :func:`shrunk_joint_log_rates`), :func:`log_rates`, :func:`set_log_likelihood`, :func:`model_log_prior`
and :func:`posterior_statistics`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from l2v_monai.labels import split_labels

__all__ = [
    # the paper (Algorithm 1)
    "masked_bce",
    "vote",
    "binarize",
    "VoteHead",
    "FeatureView",
    "feature_feedback",
    "gradient_feedback",
    "no_feedback",
    "virtual_step_feedback",
    "FEEDBACKS",
    # the anchored vote
    "VOTE_INPUTS",
    "check_inputs",
    "set_descriptors",
    "descriptor_dim",
    "label_probability",
    "SetScorer",
    "AnchorProbe",
    "anchor_agreement_loss",
    "harden",
    "no_finding_consistent",
    "soft_loss",
    "head_meta_loss",
    # the posterior vote
    "given_distributions",
    "joint_answers",
    "set_answers",
    "independent_joint_log_rates",
    "shrunk_joint_log_rates",
    "MAX_JOINT_SETS",
    "log_rates",
    "set_log_likelihood",
    "model_log_prior",
    "posterior_statistics",
]


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy averaged over the entries where ``mask`` is 1 (all when ``mask`` is None).

    NaN targets are treated as unobserved, so a caller can pass raw label sets.
    An all-masked batch gives a zero loss that is still connected to the graph.
    """
    logits = logits.float()
    targets = targets.float()
    nan = torch.isnan(targets)
    if nan.any():
        observed = (~nan).float()
        mask = observed if mask is None else mask.float() * observed
        targets = torch.nan_to_num(targets, nan=0.0)
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if mask is None:
        return per_entry.mean()
    return (per_entry * mask).sum() / mask.sum().clamp_min(1.0)


def vote(weights: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted vote ``ȳ = Σ_m w_m y_m`` over label sets, honouring missing labels.

    Args:
        weights: ``B × M`` (one weight per label set) or ``B × M × N`` (per finding); rows sum to 1.
        labels: ``B × M × N`` with NaN for missing.

    Returns:
        ``(ȳ, valid)``, both ``B × N``. Where some sets are missing, the weights of the sets that
        have a value are renormalised to sum to 1; where no set has a value, ``valid`` is 0 and
        ``ȳ`` is 0 (and must be masked out of any loss).
    """
    values, mask = split_labels(labels)
    if weights.dim() == 2:
        weights = weights.unsqueeze(-1)
    w = weights * mask
    total = w.sum(dim=1)
    valid = (mask.sum(dim=1) > 0).to(values.dtype)
    ybar = (w * values).sum(dim=1) / total.clamp_min(torch.finfo(total.dtype).tiny)
    return ybar * valid, valid


def binarize(ybar: torch.Tensor, k: float = 50.0, threshold: float = 0.5) -> torch.Tensor:
    """Differentiable binarization (Eq. 3): ``sigmoid(k (ȳ − T))``."""
    return torch.sigmoid(k * (ybar - threshold))


class VoteHead(nn.Module):
    """Eq. 2: one linear layer over the concatenated feedback, softmax over the label sets: ``M`` weights per sample."""

    def __init__(self, num_sets: int, feature_dim: int) -> None:
        super().__init__()
        if num_sets < 2:
            raise ValueError(f"learning-to-vote needs at least 2 label sets, got {num_sets}")
        self.num_sets = num_sets
        self.attn = nn.Linear(num_sets * feature_dim, num_sets)

    def forward(self, feedback: torch.Tensor) -> torch.Tensor:
        """``feedback``: ``B × M × D`` → weights ``B × M``."""
        b = feedback.shape[0]
        return torch.softmax(self.attn(feedback.reshape(b, -1).float()), dim=1)


class FeatureView(nn.Module):
    """A module whose ``forward`` is the wrapped network's ``features``.

    ``torch.func.functional_call`` always calls ``forward``; this view lets it call ``features``
    with substituted parameters (names keep the ``net.`` prefix).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, report_embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.features(image, report_embedding)


def _virtual_features(
    network: nn.Module,
    params: dict[str, torch.Tensor],
    grads: tuple[torch.Tensor | None, ...],
    alpha: float,
    image: torch.Tensor,
    report_embedding: torch.Tensor | None,
) -> torch.Tensor:
    """Features of the batch under ``θ − α g``; BN runs on cloned buffers so the real stats stay."""
    stepped = {
        f"net.{name}": (p.detach() if g is None else p.detach() - alpha * g.detach())
        for (name, p), g in zip(params.items(), grads)
    }
    stepped.update({f"net.{name}": b.detach().clone() for name, b in network.named_buffers()})
    return functional_call(FeatureView(network), stepped, (image, report_embedding), strict=False)


def _inner_grads(loss: torch.Tensor, params: dict[str, torch.Tensor], grad_scale: float) -> tuple:
    # Under AMP the scaled loss keeps fp16 gradients away from underflow; divide back here.
    grads = torch.autograd.grad(loss * grad_scale, list(params.values()), retain_graph=True, allow_unused=True)
    return tuple(None if g is None else g / grad_scale for g in grads)


def feature_feedback(
    network: nn.Module,
    image: torch.Tensor,
    report_embedding: torch.Tensor | None,
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """The paper's default feedback: ``F_m`` = GAP features under ``θ_m`` (Eq. 1), ``B × M × D``, detached.

    The forward pass is shared: all M inner gradients come from the one graph of ``logits``
    and only the M feature passes are re-run, under ``no_grad``.
    """
    params = {n: p for n, p in network.named_parameters() if p.requires_grad}
    out = []
    for m in range(labels.shape[1]):
        grads = _inner_grads(masked_bce(logits, labels[:, m]), params, grad_scale)
        with torch.no_grad():
            out.append(_virtual_features(network, params, grads, alpha, image, report_embedding).float())
    return torch.stack(out, dim=1)


def gradient_feedback(
    network: nn.Module,
    image: torch.Tensor,
    report_embedding: torch.Tensor | None,
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """The paper's alternative feedback: gradients of ``L_C(ŷ, y_m)``, taken per sample.

    A per-sample gradient over all of θ would be enormous; this uses the gradient with respect to
    the sample's own feature vector, ``∂L_C(ŷ_i, y_{m,i}) / ∂F_i`` (``B × M × D``), which is
    exact, per sample, and costs one small backward through the head per label set.
    """
    feats = features.detach().float().requires_grad_(True)
    head_logits = network.head(feats)
    out = []
    for m in range(labels.shape[1]):
        values, mask = split_labels(labels[:, m])
        per_entry = F.binary_cross_entropy_with_logits(head_logits.float(), values, reduction="none") * mask
        # Summing per-sample losses gives each sample's own gradient in its own row.
        (g,) = torch.autograd.grad(per_entry.sum(), feats, retain_graph=True)
        out.append(g.detach())
    return torch.stack(out, dim=1)


def no_feedback(
    network: nn.Module,
    image: torch.Tensor,
    report_embedding: torch.Tensor | None,
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """No virtual step: ``F_m = F`` for every set (``B × M × D``, detached), so ``ΔF_m = 0``.

    For the anchored vote, whose other inputs (the labels, their agreement, the model's and the
    probe's probability of each set's label) describe the sample without the M extra passes: the
    ablation that asks whether the virtual step earns its cost.
    """
    return features.detach().float().unsqueeze(1).expand(-1, labels.shape[1], -1)


FEEDBACKS: dict[str, Callable[..., torch.Tensor]] = {
    "features": feature_feedback,
    "gradients": gradient_feedback,
    "none": no_feedback,
}


def virtual_step_feedback(
    kind: str,
    network: nn.Module,
    image: torch.Tensor,
    report_embedding: torch.Tensor | None,
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """Dispatch to the named feedback (:data:`FEEDBACKS`: ``features``, ``gradients`` or ``none``)."""
    if kind not in FEEDBACKS:
        raise ValueError(f"unknown feedback {kind!r}; choose one of {sorted(FEEDBACKS)}")
    return FEEDBACKS[kind](network, image, report_embedding, logits, features, labels, alpha, grad_scale)


# --- The anchored vote (a per-sample vote that cannot win by confirming the model) --------------
#
# The paper's vote is trained only by the loss of the model it feeds, so it drifts to whatever
# the model already fits (all-zero targets, the deterministic adversary). The anchored vote
# keeps the structure — a per-sample attention over the label sets, refined labels that train
# the model — and changes two things:
#   1. the attention sees, per (sample, set), what distinguishes the sets on *that* sample
#      (VOTE_INPUTS): the sample's features, the normalised feature change ΔF_m = F_m − F of the
#      virtual step (zero with feedback "none", the default), the set's label, its agreement with
#      the other sets, the model's and the anchor probe's probability for it, and which set it is;
#   2. the attention is trained against an anchor, other samples' confident consensus labels
#      (Dawid–Skene decisions with posterior ≥ 0.999 by default, or unanimous/majority entries),
#      fitted before training. Objective "probe" (the default): a linear probe on the detached
#      features learns the anchor, and the vote learns to agree with the anchor where a sample
#      has one and with the probe where it has none. Objective "meta": a bilevel score in the
#      style of L2RW, a virtual step of the classifier head on one half of the batch's refined
#      labels scored on the other half's anchor labels.
#      The model's own loss never reaches the attention.


def _unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-8)


def label_probability(logits: torch.Tensor, values: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """The probability that ``logits`` give each set's label: ``B × M × 1`` (multi-class) or ``B × M × N``."""
    if multiclass:
        return (values * torch.softmax(logits.detach().float(), dim=1).unsqueeze(1)).sum(-1, keepdim=True)
    p = torch.sigmoid(logits.detach().float()).unsqueeze(1)
    return values * p + (1 - values) * (1 - p)


#: The parts of the vote's input per (sample, label set), in order; ``inputs`` picks a subset (ablations).
VOTE_INPUTS: tuple[str, ...] = ("features", "feedback", "labels", "agreement", "model", "probe", "set")


def check_inputs(inputs: Sequence[str]) -> tuple[str, ...]:
    unknown = [x for x in inputs if x not in VOTE_INPUTS]
    if unknown or not inputs:
        raise ValueError(f"vote inputs must be a non-empty subset of {VOTE_INPUTS}, got {list(inputs)!r}")
    return tuple(x for x in VOTE_INPUTS if x in inputs)


def set_descriptors(
    features: torch.Tensor,
    feedback: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    multiclass: bool,
    probe_logits: torch.Tensor | None = None,
    inputs: Sequence[str] = VOTE_INPUTS,
) -> torch.Tensor:
    """Per (sample, label set) attention input, ``B × M × E`` (all detached).

    ``[F̂, ΔF̂_m, y_m, agreement_m, p(y_m), q(y_m), onehot(m)]`` where hats are unit-normalised, the
    agreement is the fraction of the *other* sets that give the same label, ``p(y_m)`` the
    current model's probability of the set's label and ``q(y_m)`` the
    :class:`AnchorProbe`'s (only with ``probe_logits``). ``inputs`` keeps a subset of
    :data:`VOTE_INPUTS` (the ablations of ``docs/vote.md``). Missing labels contribute zeros.
    """
    inputs = check_inputs(inputs)
    b, m, _ = labels.shape
    values, mask = split_labels(labels)
    present = mask if not multiclass else mask[..., :1]
    parts: list[torch.Tensor] = []
    if "features" in inputs:
        parts.append(_unit(features.detach().float()).unsqueeze(1).expand(b, m, -1))
    if "feedback" in inputs:
        parts.append(_unit(feedback.float() - features.detach().float().unsqueeze(1)))
    if "labels" in inputs:
        parts.append(values)
    if "agreement" in inputs:
        if multiclass:
            same = torch.einsum("bik,bjk->bij", values, values)  # 1 where sets i and j give the same class
            others = mask[..., 0].unsqueeze(1) * (1 - torch.eye(m, device=labels.device))
            agree = ((same * others).sum(-1) / others.sum(-1).clamp_min(1)).unsqueeze(-1)
        else:
            same = 1 - (values.unsqueeze(2) - values.unsqueeze(1)).abs()  # B × M × M × N
            others = mask.unsqueeze(1) * (1 - torch.eye(m, device=labels.device)).view(1, m, m, 1)
            agree = (same * others).sum(2) / others.sum(2).clamp_min(1)
        parts.append(agree * present)
    if "model" in inputs:
        parts.append(label_probability(logits, values, multiclass) * present)
    if "probe" in inputs and probe_logits is not None:
        parts.append(label_probability(probe_logits, values, multiclass) * present)
    if "set" in inputs:
        parts.append(torch.eye(m, device=labels.device).expand(b, m, m))
    return torch.cat(parts, dim=-1)


class SetScorer(nn.Module):
    """A small MLP shared across label sets: descriptor of (sample, set) → score per output.

    Sharing it across sets keeps the attention about *what a set says on this sample*; the
    set's identity is one of the inputs, so per-set reliability can still be learned.
    """

    def __init__(self, in_dim: int, num_outputs: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs))

    def forward(self, descriptors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Softmax over sets of the scores, with missing sets excluded: ``B × M × outputs``."""
        scores = self.net(descriptors)
        scores = scores.masked_fill(mask < 0.5, -1e4)
        return torch.softmax(scores, dim=1)


def descriptor_dim(
    feature_dim: int,
    num_sets: int,
    num_outputs: int,
    multiclass: bool,
    probe: bool = False,
    inputs: Sequence[str] = VOTE_INPUTS,
) -> int:
    """Width of :func:`set_descriptors`' output for the same ``inputs``."""
    inputs = check_inputs(inputs)
    per_finding = 1 if multiclass else num_outputs
    width = {"features": feature_dim, "feedback": feature_dim, "labels": num_outputs, "agreement": per_finding,
             "model": per_finding, "probe": per_finding if probe else 0, "set": num_sets}
    return sum(width[x] for x in inputs)


class AnchorProbe(nn.Module):
    """A linear classifier on the model's (detached) features, fitted to the anchor labels only.

    It never sees a refined label, so its opinion on a contested sample is what the *other*
    samples' consensus says about images like it: an anchor outside the model's own targets.
    The vote sees it as one more input per (sample, set) and is pulled toward it where a sample
    has no confident consensus of its own (``vote_objective="probe"``).
    """

    def __init__(self, feature_dim: int, num_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(feature_dim, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.detach().float())

    def loss(self, logits: torch.Tensor, anchor: torch.Tensor, multiclass: bool) -> torch.Tensor:
        """Its own training loss: the anchored entries only."""
        return _anchor_loss(logits, anchor, multiclass)


def anchor_agreement_loss(
    ybar: torch.Tensor, valid: torch.Tensor, anchor: torch.Tensor, probe_logits: torch.Tensor, multiclass: bool
) -> torch.Tensor:
    """Cross-entropy of the vote's ``ȳ`` against the anchor where a sample has one, else the probe.

    Differentiable in ``ȳ`` only. The target comes from other samples' consensus (directly, or
    through the probe), never from the labels the model is trained on.
    """
    anchor = anchor.detach().float()
    if multiclass:
        q = torch.softmax(probe_logits.detach().float(), dim=1)
        has = ~torch.isnan(anchor).any(dim=1, keepdim=True)
        target = torch.where(has, torch.nan_to_num(anchor), q)
        rows = valid[:, 0] if valid.dim() == 2 else valid
        ce = -(target * torch.log(ybar.float().clamp_min(1e-6))).sum(dim=1)
        return (ce * rows).sum() / rows.sum().clamp_min(1.0)
    target = torch.where(torch.isnan(anchor), torch.sigmoid(probe_logits.detach().float()), anchor)
    per_entry = F.binary_cross_entropy(ybar.float().clamp(1e-6, 1 - 1e-6), target, reduction="none")
    return (per_entry * valid).sum() / valid.sum().clamp_min(1.0)


def harden(ybar: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """The vote's decision: one-hot of the argmax (multi-class) or ``ȳ ≥ 0.5`` per finding."""
    if multiclass:
        return F.one_hot(ybar.argmax(dim=1), ybar.shape[1]).to(ybar.dtype)
    return (ybar >= 0.5).to(ybar.dtype)


def no_finding_consistent(refined: torch.Tensor, no_finding: int, ignore: tuple[int, ...] = ()) -> torch.Tensor:
    """Cap the refined "No Finding" by the absence of every other finding: ``min(ỹ_nf, 1 − max_j ỹ_j)``.

    Report labelers miss findings far more often than they invent them, and a labeler that misses
    every finding of a report calls it "No Finding": on that output the error runs the other way
    (an invented positive). Where the vote keeps any finding, the report is not normal. ``ignore``
    lists the outputs that do not contradict "No Finding" (CheXpert's Support Devices). Multi-label only.
    """
    others = [j for j in range(refined.shape[1]) if j != no_finding and j not in ignore]
    if not others:
        return refined
    out = refined.clone()
    out[:, no_finding] = torch.minimum(refined[:, no_finding], 1 - refined[:, others].amax(dim=1))
    return out


def soft_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Soft-target loss: cross-entropy over classes (multi-class) or masked BCE (multi-label)."""
    if multiclass:
        rows = valid[:, 0] if valid.dim() == 2 else valid
        ce = -(target * torch.log_softmax(logits.float(), dim=1)).sum(dim=1)
        return (ce * rows).sum() / rows.sum().clamp_min(1.0)
    return masked_bce(logits, target, valid)


def _anchor_loss(logits: torch.Tensor, anchor: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """:func:`soft_loss` against anchor labels, NaN (no confident consensus) left out."""
    return soft_loss(logits, *split_labels(anchor), multiclass)


def head_meta_loss(
    head: nn.Module,
    features: torch.Tensor,
    refined: torch.Tensor,
    refined_valid: torch.Tensor,
    anchor: torch.Tensor,
    multiclass: bool,
    step: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bilevel score of the refined labels, differentiable in ``refined`` only.

    The batch is split in two halves. For each half, the classifier head takes a virtual step
    of size ``step`` on that half's refined labels; the stepped head is then scored on the other
    half's anchor labels (NaN = no confident consensus, ignored). Features are detached and
    centred, only the head's weight (a copy) takes the step, so only the vote receives this gradient.
    """
    b = features.shape[0]
    # Centred features, and a step of the weight only: what all samples share (the mean feature,
    # the bias) would otherwise dominate the score and reward matching class frequencies instead
    # of labelling each sample right.
    feats = features.detach().float()
    feats = feats - feats.mean(dim=0, keepdim=True)
    params = {n: p.detach().clone().requires_grad_(n == "weight") for n, p in head.named_parameters()}
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    order = torch.randperm(b, generator=generator, device="cpu").to(features.device)
    halves = (order[: b // 2], order[b // 2 :])
    anchor_mask = ~torch.isnan(anchor)
    total = feats.new_zeros(())
    for tr, te in (halves, halves[::-1]):
        if len(tr) == 0 or len(te) == 0 or anchor_mask[te].sum() == 0:
            continue
        inner = soft_loss(functional_call(head, params, (feats[tr],)), refined[tr], refined_valid[tr], multiclass)
        grads = torch.autograd.grad(inner, list(trainable.values()), create_graph=True)
        stepped = {**params, **{n: p - step * g for (n, p), g in zip(trainable.items(), grads)}}
        total = total + _anchor_loss(functional_call(head, stepped, (feats[te],)), anchor[te], multiclass)
    return total


# --------------------------------------------------------------------------------------------
# The posterior vote (label_strategy "posterior_vote"): each set's vote weight is its learned confusion matrix,
# and the model's own prediction of the sample is one more voter.
# --------------------------------------------------------------------------------------------


def given_distributions(labels: torch.Tensor, multiclass: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The label sets as per-task distributions over given labels: ``G`` (``B × T × M × K``) and ``mask`` (``B × T × M``).

    One-hot data is one task over its ``K`` classes (``T = 1``); multi-label data is ``N`` binary
    tasks (``T = N``, ``K = 2``: ``[1 − y, y]``, so a soft label splits its count).
    """
    values, mask = split_labels(labels)
    if multiclass:
        return values.unsqueeze(1), mask[..., 0].unsqueeze(1)
    given = torch.stack([1.0 - values, values], dim=-1).transpose(1, 2)
    return given * mask.transpose(1, 2).unsqueeze(-1), mask.transpose(1, 2)


#: The most label sets whose joint answer :func:`joint_answers` encodes (3^M answers per finding).
MAX_JOINT_SETS = 6


def _answer_codes(labels: torch.Tensor) -> torch.Tensor:
    """Each set's answer per finding (``B × M × N``): 0 nothing, 1 says 0, 2 says 1 (soft labels cut at 0.5)."""
    present = ~torch.isnan(labels)
    return torch.where(present, 1 + (torch.nan_to_num(labels) >= 0.5).long(), torch.zeros_like(labels, dtype=torch.long))


def joint_answers(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-label sets' *joint* answer per finding as one symbol: ``G`` (``B × N × 1 × 3^M``, one-hot) and ``mask`` (``B × N × 1``).

    Each set says 0, 1 (soft labels cut at 0.5) or nothing; the tuple over the M sets is one of
    ``3^M`` answers. Modelling the tuple rather than each set drops Dawid–Skene's assumption that
    the sets err independently given the truth, which two mappings of one labeler's "uncertain"
    (``u0``/``u1``) break by construction. ``mask`` is 0 where no set has a label.
    """
    m = labels.shape[1]
    if m > MAX_JOINT_SETS:
        raise ValueError(f"the joint answer of {m} label sets has 3^{m} values; use sets='independent' above {MAX_JOINT_SETS} sets")
    powers = 3 ** torch.arange(m, device=labels.device)
    code = (_answer_codes(labels) * powers[None, :, None]).sum(dim=1)
    given = F.one_hot(code, 3**m).to(labels.dtype).unsqueeze(2)
    return given, (code > 0).to(labels.dtype).unsqueeze(2)


def set_answers(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each multi-label set's answer per finding over {nothing, 0, 1}: ``G`` (``B × N × M × 3``, one-hot) and ``mask`` (ones).

    The per-set view of :func:`joint_answers`' symbols: saying nothing is an answer too, so that the
    sets' rates multiply into a distribution over the joint answers (:func:`independent_joint_log_rates`).
    """
    given = F.one_hot(_answer_codes(labels), 3).to(labels.dtype).transpose(1, 2)
    return given, torch.ones(given.shape[:3], dtype=labels.dtype, device=labels.device)


def independent_joint_log_rates(set_log_rates: torch.Tensor) -> torch.Tensor:
    """``log Π_m P(set m answers d_m | k)`` for every joint answer (``T × 1 × K × 3^M``) from per-set rates (``T × M × K × 3``)."""
    m = set_log_rates.shape[1]
    codes = torch.arange(3**m, device=set_log_rates.device)
    digits = (codes[:, None] // (3 ** torch.arange(m, device=codes.device))[None, :]) % 3  # 3^M × M
    per_set = set_log_rates.permute(0, 2, 1, 3)  # T × K × M × 3
    picked = per_set[:, :, torch.arange(m, device=codes.device)[None, :], digits]  # T × K × 3^M × M
    return picked.sum(dim=-1).unsqueeze(1)


def shrunk_joint_log_rates(joint_counts: torch.Tensor, set_counts: torch.Tensor, shrinkage: float, smoothing: float = 1.0) -> torch.Tensor:
    """Joint-answer rates shrunk toward the sets erring independently: ``(C(s, k) + τ·P_ind(s | k)) / (N_k + τ)``.

    ``τ`` (``shrinkage``) is in items: a finding with many items per class is described by its own
    joint table (the sets' shared errors), a rare one mostly by the per-set (Dawid–Skene) rates.
    """
    independent = independent_joint_log_rates(log_rates(set_counts, smoothing)).exp()
    shrunk = joint_counts + shrinkage * independent
    return torch.log(shrunk / shrunk.sum(dim=-1, keepdim=True))


def log_rates(counts: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """``log P(set m says j | truth k)`` (``T × M × K × J``) from soft counts.

    ``smoothing`` is a Dirichlet prior's total mass per (task, set, true class) row, spread evenly
    over the row's ``J`` answers, so that the prior weighs the same for a set's 2 answers and for a
    joint answer's ``3^M``.
    """
    smoothed = counts + smoothing / counts.shape[-1]
    return torch.log(smoothed / smoothed.sum(dim=-1, keepdim=True))


def set_log_likelihood(given: torch.Tensor, mask: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """``Σ_m log P(y_m | truth k)`` per sample and task (``B × T × K``); a missing set adds nothing."""
    per_set = torch.einsum("btmj,tmkj->btmk", given, rates)
    return (per_set * mask.unsqueeze(-1)).sum(dim=2)


def model_log_prior(logits: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """The model's own ``log P(truth k | x)`` per task (``B × T × K``), detached."""
    logits = logits.detach().float()
    if multiclass:
        return torch.log_softmax(logits, dim=1).unsqueeze(1)
    return torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=-1)


def posterior_statistics(posterior: torch.Tensor, given: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The E-step's soft counts: ``Σ_b q(k) · G_m(j)`` (``T × M × K × K``) and ``Σ_b q(k)`` (``T × K``), over labelled entries."""
    labelled = (mask.sum(dim=2) > 0).to(posterior.dtype).unsqueeze(-1)
    q = posterior * labelled
    return torch.einsum("btk,btmj->tmkj", q, given * mask.unsqueeze(-1)), q.sum(dim=0)
