"""A trained run's view of its own training items: the vote's weights and refined labels, the model's
probabilities.

Runs save the network and the strategy, not per-item outputs, so these are recomputed: the saved
network and vote go once over the training items, in evaluation mode and without an update
(:func:`vote_outputs`). The relabeling queue ranks images with them; the label-set quality report
turns them into a second estimate of every set's sensitivity and specificity, beside Dawid–Skene's.
:func:`evidence_from_run` does it for a bundle run folder (``models/checkpoint.pt``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunOutputs", "evidence_from_run", "item_batches", "parse_overrides", "vote_outputs"]


@dataclass(frozen=True)
class RunOutputs:
    """What a trained run says about ``S`` items × ``M`` sets × ``N`` findings.

    ``vote`` is the vote's soft refined label ``ȳ = Σ_m w_m y_m`` (S × N; NaN where no set labels
    the entry; for a strategy that does not vote, the target it trains toward), ``model`` the
    model's probability (S × N) and ``weights`` the weight each set had in ``ȳ`` (S × M × N, renormalised
    over the sets that label the entry, NaN where a set has no label; None for a strategy that does not vote).
    """

    vote: np.ndarray
    model: np.ndarray
    weights: np.ndarray | None = None


def item_batches(items: Sequence[Mapping[str, Any]], batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """In-memory items collated ``batch_size`` at a time, in order (what a DataLoader without shuffling gives)."""
    from torch.utils.data import default_collate

    for start in range(0, len(items), batch_size):
        yield default_collate([dict(it) for it in items[start : start + batch_size]])


def vote_outputs(strategy: Any, network: Any, batches: Iterable[Mapping[str, Any]], device: Any = "cpu") -> RunOutputs:
    """A trained vote run over the training batches, no update: ȳ, the model's probabilities, the weights.

    Each batch goes through the network (eval mode) and the strategy's ``forward`` as in a training
    step; ``ȳ`` comes from the weights it returns (the decision the model trained toward is
    ``ȳ ≥ 0.5``). Batches hold ``image`` and ``labels``, plus the fitted ``target`` when the strategy
    has one (:func:`l2v_monai.strategies.attach_targets`); :func:`item_batches` makes them from
    in-memory items.
    """
    import torch

    from l2v_monai.labels import split_labels
    from l2v_monai.strategies import vote as v
    from l2v_monai.engine.trainer import to_device

    was_training = network.training
    network.eval()
    refined, probs, weights = [], [], []
    try:
        for raw in batches:
            # The strategy sees the batch as the trainer gives it: image, labels and every other key.
            batch = to_device(dict(raw), device)
            image = batch["image"] = batch["image"].float()
            labels = batch["labels"] = batch["labels"].float()
            report = batch.get("report_embedding")
            with torch.no_grad():
                features = network.features(image, report.float()) if report is not None else network.features(image)
                logits = network.head(features)
            # A vote with virtual steps takes gradients inside its forward; the rest needs none.
            with torch.enable_grad():
                out = strategy(batch, logits, features, network)
            if out.weights is not None:
                ybar, valid = v.vote(out.weights, labels)
                ybar = torch.where(valid > 0, ybar, torch.full_like(ybar, float("nan")))
                # The weight each set had in ȳ: renormalised over the sets that label the entry, as vote() does.
                _, mask = split_labels(labels)
                w = out.weights.detach()
                w = (w.unsqueeze(-1) if w.dim() == 2 else w) * mask
                w = w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
                weights.append(torch.where(mask > 0, w, torch.full_like(w, float("nan"))).float().cpu().numpy())
            else:
                ybar = out.target
            refined.append(ybar.detach().float().cpu().numpy())
            probs.append(torch.sigmoid(logits).float().cpu().numpy())
    finally:
        network.train(was_training)
    if weights and len(weights) != len(refined):
        raise ValueError("the strategy returned vote weights for some batches only")
    return RunOutputs(np.concatenate(refined), np.concatenate(probs), np.concatenate(weights) if weights else None)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["image_size=64", "dataset_dir=/data"]`` → ``{"image_size": 64, "dataset_dir": "/data"}`` (JSON values, else strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--override takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def evidence_from_run(
    run_dir: str | Path,
    datalist: str | Path,
    overrides: Mapping[str, Any] | None = None,
    config: str = "configs/train.json",
    batch_size: int = 32,
) -> dict[str, Any]:
    """A trained bundle run's view of the training items: the vote's ȳ and weights, the model's probabilities.

    ``run_dir`` is the bundle root the run trained in (``configs/``, ``models/checkpoint.pt``);
    ``overrides`` are the config keys the run was started with (``image_size``, ``label_sets`` ...),
    so that the network, the strategy and the preprocessing match the checkpoint. The network and
    the strategy are restored from the same epoch (``checkpoint.pt``) and run once over the
    training split of ``datalist`` on the CPU (the image cache is built when missing). Returns
    ``{"items", "labels" S × M × N, "label_sets", "findings", "vote", "model", "weights"}``.
    """
    import torch
    from monai.bundle import ConfigParser
    from monai.data import DataLoader

    run_dir = Path(run_dir).resolve()
    checkpoint = run_dir / "models" / "checkpoint.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint in the run: {checkpoint} (train with 'run training' first)")
    parser = ConfigParser()
    parser.read_config(run_dir / config)
    parser["bundle_root"] = str(run_dir)
    parser["datalist"] = str(Path(datalist).resolve())
    parser["device"] = torch.device("cpu")
    parser["amp"] = False
    parser["num_workers"] = 0
    for key, value in (overrides or {}).items():
        parser[key] = value
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(state["network"])
    strategy = parser.get_parsed_content("strategy")
    strategy.load_state_dict(state["strategy"])
    dataset = parser.get_parsed_content("train#dataset")
    items = list(dataset.data)
    out = vote_outputs(strategy, network, DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0))
    labels = np.stack([np.asarray([[np.nan if x is None else float(x) for x in row] for row in it["labels"]]) for it in items])
    return {"items": items, "labels": labels, "label_sets": list(parser["label_sets"]), "findings": list(parser["findings"]),
            "vote": out.vote, "model": out.model, "weights": out.weights}
