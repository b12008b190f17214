"""Simulated relabeling rounds: hand-label the top N of each ranking by revealing the truth, retrain, score.

On the two testbeds whose truth is known:

* ``multilabel``: the synthetic multi-label testbed (``l2v_monai.experiments.multilabel_testbed``,
  SmallCNN), test AUC against the truth on its 2000 test images;
* ``report``: the OpenI report testbed (``l2v_monai.experiments.report_testbed``: four labeler sets,
  MeSH truth, TF-IDF + MiniLM → MLP), one cross-validation fold, test AUC against MeSH.

Per seed, round 0 trains the anchored vote (``bundle/configs/train.json``'s ``strategy_options#l2v``)
without hand labels and keeps what the rankings look at: the label sets, Dawid–Skene's posterior,
the vote's soft refined label ȳ on every training item and the model's probabilities
(``l2v_monai.engine.run_outputs.vote_outputs``). Each ranking then picks its top N training items;
their truth is revealed as hand labels (NaN truth stays unlabelled: MeSH has no negatives for most
findings outside the reports tagged ``normal``), and the anchored vote is trained again from the
same initialisation with those hand labels (anchors and targets where present). The row reports
the test mean AUC, its gain over round 0, and how many of the revealed entries the round-0 vote had
wrong.

    # development seed: choose the queue's combination (every candidate at N = 200)
    python scripts/relabel_rounds.py --testbed multilabel --seeds 100 --n 200 --methods candidates \\
        --threads 1 --out results/relabel_rounds_multilabel_dev
    # report seeds: the comparison at N in {50, 100, 200, 400}
    python scripts/relabel_rounds.py --testbed report --reports NLMCXR_reports.tgz --label-sets labels_209f33a.npz \\
        --seeds 0 --threads 1 --out results/relabel_rounds_report
    # merge runs into one table and plot
    python scripts/relabel_rounds.py --collect results/relabel_rounds_*_s*.json --out results/relabel_rounds

Writes ``<out>.json`` (every run), ``<out>.md`` (tables) and ``<out>.png`` (AUC against N).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

from l2v_monai.experiments.vote_variants import variant_options

from l2v_monai.experiments.relabel_scores import ALL_METHODS
from l2v_monai.quality.relabel_queue import (
    QUEUE_AGGREGATE,
    QUEUE_METHOD,
    QueueEvidence,
    finding_scores,
    image_scores,
    top_n,
    with_hand,
)
from l2v_monai.engine.run_outputs import item_batches, vote_outputs

#: The comparison on the report seeds: name → (score, aggregate); ``random`` draws a seeded order.
COMPARISON: dict[str, tuple[str, str]] = {
    "random": ("random", ""),
    "activelab": ("activelab", "max"),
    "disagreement": ("disagreement", "sum"),
    "queue": (QUEUE_METHOD, QUEUE_AGGREGATE),
}
#: Every candidate measured on the development seeds.
CANDIDATES: dict[str, tuple[str, str]] = {
    "random": ("random", ""),
    "random:1": ("random", "1"),
    "random:2": ("random", "2"),
    "placebo": ("placebo", ""),
    "mix:contested_expected_error:0.5": ("mix:contested_expected_error", "sum"),
    "mix:disagreement:0.5": ("mix:disagreement", "sum"),
    "audit:calibrated_error:0.25": ("audit:calibrated_error", "sum"),
    "audit:calibrated_error:0.5": ("audit:calibrated_error", "sum"),
    "activelab:max": ("activelab", "max"),
    "activelab:mean": ("activelab", "mean"),
    "disagreement:sum": ("disagreement", "sum"),
    "vote_entropy:sum": ("vote_entropy", "sum"),
    "model_entropy:sum": ("model_entropy", "sum"),
    "model_vs_vote:sum": ("model_vs_vote", "sum"),
    "expected_error:sum": ("expected_error", "sum"),
    "contested_expected_error:sum": ("contested_expected_error", "sum"),
    "contested_model:sum": ("contested_model", "sum"),
}
#: Measured after the comparison, on the report seeds, not chosen: the queue's own score, re-ranked
#: after every 50 hand labels with the vote retrained on them (``iterate:<score>:<step>``).
ITERATED: dict[str, tuple[str, str]] = {
    "iterate:contested_expected_error:50": ("iterate:contested_expected_error", "sum"),
}
NS = (50, 100, 200, 400)


# ------------------------------------------------------------------------------------------------
# The two testbeds: data, training with the anchored vote (and hand labels), test AUC
# ------------------------------------------------------------------------------------------------
class MultilabelBed:
    """The synthetic multi-label testbed, trained like scripts/reproduce_multilabel_testbed.py."""

    name = "multilabel"

    def __init__(self, seed: int, n_train: int, epochs: int) -> None:
        from l2v_monai.experiments.multilabel_testbed import make_multilabel_testbed

        self.seed, self.epochs = seed, epochs
        data = make_multilabel_testbed(n_train=n_train, n_test=2000, seed=seed)
        self.images = [it["image"] for it in data["training"]]
        self.labels = np.stack([it["labels"] for it in data["training"]]).astype(np.float32)
        self.truth = np.stack([it["truth"] for it in data["training"]]).astype(np.float32)
        self.findings, self.set_names = data["findings"], data["label_sets"]
        self.test_images = np.stack([it["image"] for it in data["test"]])
        self.test_truth = np.stack([it["label"] for it in data["test"]])
        self.settings = {"n_train": n_train, "training_items": len(self.images), "epochs": epochs, "network": "SmallCNN",
                         "batch_size": 32, "lr": 1e-3, "vote_lr": "train.json (0.01)"}

    def network(self) -> torch.nn.Module:
        from l2v_monai.bundle_scripts.networks import SmallCNN

        return SmallCNN(num_outputs=len(self.findings), in_channels=1)

    def items(self, hand: np.ndarray | None) -> list[dict[str, Any]]:
        items = [{"image": x, "labels": y} for x, y in zip(self.images, self.labels)]
        return _with_hand(items, hand)

    def test_auc(self, net: torch.nn.Module) -> tuple[float, dict[str, float]]:
        return _auc(net, self.test_images, self.test_truth, self.findings)


class ReportBed:
    """The OpenI report testbed, one fold, trained like ``report_testbed.run_fold``."""

    name = "report"

    def __init__(self, seed: int, reports: Path, label_sets: Path, fold: int, folds: int, epochs: int, cache: Path | None) -> None:
        from l2v_monai.labelers.openi_corpus import default_cache_dir, load_openi_corpus
        from l2v_monai.experiments.report_testbed import ModelSettings, kfold_indices, minilm_embeddings, tfidf_features

        self.seed, self.epochs = seed, epochs
        corpus = load_openi_corpus(reports, cache, label_file=label_sets)
        settings = ModelSettings(epochs=epochs)
        train, test = kfold_indices(len(corpus.texts), folds, seed)[fold]
        x_train, x_test = tfidf_features([corpus.texts[i] for i in train], [corpus.texts[i] for i in test],
                                         settings.max_features, settings.min_df)
        embedded = minilm_embeddings(corpus.texts, cache or default_cache_dir())
        self.images = list(np.concatenate([x_train, embedded[train]], axis=1).astype(np.float32))
        self.test_images = np.concatenate([x_test, embedded[test]], axis=1).astype(np.float32)
        self.labels = corpus.label_sets[train].astype(np.float32)
        self.truth = corpus.truth[train].astype(np.float32)
        self.test_truth = corpus.truth[test]
        self.findings, self.set_names = list(corpus.findings), list(corpus.set_names)
        self.hidden, self.batch_size, self.lr = settings.hidden, settings.batch_size, settings.lr
        self.settings = {"reports": len(corpus.texts), "training_items": len(train), "test_items": len(test), "fold": fold,
                         "folds": folds, "epochs": epochs, "features": "TF-IDF + MiniLM", "hidden": settings.hidden,
                         "batch_size": settings.batch_size, "lr": settings.lr}
        self.seed_offset = seed * 1000 + fold

    def network(self) -> torch.nn.Module:
        from l2v_monai.experiments.report_testbed import TextMLP

        return TextMLP(self.images[0].shape[0], len(self.findings), self.hidden)

    def items(self, hand: np.ndarray | None) -> list[dict[str, Any]]:
        items = [{"image": x, "labels": y} for x, y in zip(self.images, self.labels)]
        return _with_hand(items, hand)

    def test_auc(self, net: torch.nn.Module) -> tuple[float, dict[str, float]]:
        return _auc(net, self.test_images, self.test_truth, self.findings)


def _with_hand(items: list[dict[str, Any]], hand: np.ndarray | None) -> list[dict[str, Any]]:
    """Hand labels travel in each item's ``label`` (NaN where none), as an imported datalist gives them."""
    if hand is None:
        return items
    return [{**it, "label": h.astype(np.float32)} for it, h in zip(items, hand)]


@torch.no_grad()
def _auc(net: torch.nn.Module, x: np.ndarray, truth: np.ndarray, findings: list[str]) -> tuple[float, dict[str, float]]:
    """The test mean AUC and each finding's AUC."""
    from l2v_monai.evaluation import per_finding_auc

    net.eval()
    images = torch.from_numpy(np.asarray(x))
    scores = torch.sigmoid(torch.cat([net(images[i : i + 512]) for i in range(0, len(images), 512)])).numpy()
    auc = per_finding_auc(truth, scores, findings)
    return float(auc["macro_auc"]), {f: float(r["auc"]) for f, r in auc["per_finding"].items()}


def train(bed: Any, hand: np.ndarray | None) -> tuple[torch.nn.Module, Any, list[dict[str, Any]], float]:
    """Train the anchored vote on ``bed`` (with ``hand`` labels, S × N NaN = none); same initialisation every call."""
    from monai.data import DataLoader, Dataset

    from l2v_monai.strategies import attach_targets, build_strategy
    from l2v_monai.engine.trainer import LearningToVoteTrainer

    offset = getattr(bed, "seed_offset", bed.seed)
    torch.manual_seed(offset)
    net = bed.network()
    strategy = build_strategy("l2v", num_sets=len(bed.set_names), num_outputs=len(bed.findings), feature_dim=net.num_features,
                              label_sets=bed.set_names, options={"l2v": variant_options("l2v_default", bed.seed)})
    items = attach_targets(bed.items(hand), strategy)
    loader = DataLoader(Dataset(items), batch_size=getattr(bed, "batch_size", 32), shuffle=True,
                        generator=torch.Generator().manual_seed(offset))
    optimizer = torch.optim.Adam(strategy.param_groups(net, getattr(bed, "lr", 1e-3)))
    start = time.perf_counter()
    LearningToVoteTrainer("cpu", bed.epochs, loader, net, optimizer, strategy, decollate=False).run()
    return net, strategy, items, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------
# One seed: round 0, then every ranking × N
# ------------------------------------------------------------------------------------------------
def evidence_for(bed: Any, cache: Path | None) -> tuple[QueueEvidence, dict[str, Any]]:
    """Round 0 (no hand labels) and what the rankings read; cached in ``cache`` (.npz) when given."""
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            ev = QueueEvidence(bed.labels, saved["ds_posterior"], saved["vote"], saved["model"])
            meta = json.loads(str(saved["meta"]))
        return ev, meta
    from l2v_monai.quality.label_set_estimates import estimate_quality

    net, strategy, items, seconds = train(bed, None)
    outputs = vote_outputs(strategy, net, item_batches(items))
    vote, model = outputs.vote, outputs.model
    ds = estimate_quality(bed.labels).posterior
    auc, per_finding = bed.test_auc(net)
    meta = {"auc": auc, "per_finding": per_finding, "seconds": seconds}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, ds_posterior=ds, vote=vote, model=model, meta=np.array(json.dumps(meta)))
    return QueueEvidence(bed.labels, ds, vote, model), meta


def ranking(method: str, spec: tuple[str, str], ev: QueueEvidence, seed: int, n: int | None = None,
            truth: np.ndarray | None = None) -> np.ndarray:
    """Every training item, best first, under one ranking (an audited one depends on the budget ``n``)."""
    score, aggregate = spec
    if score.startswith("audit:"):
        return audited_order(method, score[6:], aggregate, ev, seed, n, truth)
    if score in ("random", "placebo"):
        # Another draw ("random" with aggregate "1", "2" ...) measures how much one random sample's luck weighs.
        draw = int(aggregate or 0)
        return np.random.default_rng(10_000 + seed + 7919 * draw).permutation(ev.labels.shape[0])
    if score.startswith("mix:"):
        return mixed_order(ranking(method, (score[4:], aggregate), ev, seed), ranking(method, ("random", ""), ev, seed),
                           float(method.rsplit(":", 1)[1]))
    return top_n(image_scores(finding_scores(score, ev, ALL_METHODS), aggregate), ev.labels.shape[0])


def audited_order(method: str, score: str, aggregate: str, ev: QueueEvidence, seed: int, n: int | None,
                  truth: np.ndarray | None) -> np.ndarray:
    """A random audit of ``share × n`` images, hand-labelled first; the rest of the budget by ``score``
    calibrated on the audit's hand labels (``calibrated_error``)."""
    if n is None or truth is None:
        raise ValueError(f"{method} needs the budget and the truth: its ranking depends on what the audit reveals")
    share = float(method.rsplit(":", 1)[1])
    audit = ranking(method, ("random", ""), ev, seed)[: int(round(share * n))]
    hand = np.full_like(truth, np.nan)
    hand[audit] = truth[audit]
    scores = image_scores(finding_scores(score, QueueEvidence(ev.labels, ev.ds_posterior, ev.vote, ev.model, hand), ALL_METHODS), aggregate)
    scores[audit] = -np.inf
    return np.concatenate([audit, top_n(scores, len(scores))])


def mixed_order(ranked: np.ndarray, random: np.ndarray, share: float) -> np.ndarray:
    """Interleave a random sample into a ranking: of the first N images, a ``share`` are random, the rest ranked.

    Exploration and exploitation: the ranked part finds the entries the vote likely has wrong, the
    random part covers what no score can see (entries every set gets wrong alike) and the population
    the test set is drawn from.
    """
    out: list[int] = []
    taken: set[int] = set()
    streams = {False: iter(ranked.tolist()), True: iter(random.tolist())}
    from_random = 0
    while len(out) < len(ranked):
        # The random stream's turn when taking from it keeps its count within share × the queue's length.
        use_random = from_random + 1 <= share * (len(out) + 1) + 1e-9
        for index in streams[use_random]:
            if index not in taken:
                taken.add(index)
                out.append(index)
                from_random += use_random
                break
    return np.asarray(out)


def run_seed(bed: Any, methods: dict[str, tuple[str, str]], ns: list[int], cache: Path | None) -> list[dict[str, Any]]:
    """Round 0 and every ranking × N on one seed's testbed; one dict per trained model."""
    ev, round0 = evidence_for(bed, cache)
    print(f"{bed.name} seed {bed.seed}: round 0 test mean AUC {round0['auc']:.4f} ({round0['seconds']:.0f} s)", flush=True)
    decided = (ev.vote >= 0.5).astype(np.float32)
    wrong = ~np.isnan(bed.truth) & (decided != bed.truth)
    contested = np.nanmax(ev.labels, 1) != np.nanmin(ev.labels, 1)
    runs = [{"testbed": bed.name, "seed": bed.seed, "method": "none", "score": "", "n": 0, "auc": round0["auc"], "gain": 0.0,
             "revealed": 0, "vote_wrong_revealed": 0, "contested_revealed": 0, "seconds": round0["seconds"],
             "per_finding": round0.get("per_finding"), "settings": bed.settings}]
    for method, spec in methods.items():
        if spec[0].startswith("iterate:"):
            runs += iterated_rounds(bed, method, spec, ev, round0, ns, wrong, contested)
            continue
        order = None if spec[0].startswith("audit:") else ranking(method, spec, ev, bed.seed)
        for n in ns:
            chosen = (order if order is not None else ranking(method, spec, ev, bed.seed, n, bed.truth))[:n]
            hand = np.full_like(bed.truth, np.nan)
            # The placebo "hand-labels" random images with the round-0 vote's own decisions: no new
            # information, only a changed training run, so its gain is the noise floor of the others.
            hand[chosen] = decided[chosen] if spec[0] == "placebo" else bed.truth[chosen]
            net, _, _, seconds = train(bed, hand)
            runs.append(scored_round(bed, net, method, spec, n, round0, hand, chosen, wrong, contested, seconds))
    return runs


def scored_round(bed: Any, net: torch.nn.Module, method: str, spec: tuple[str, str], n: int, round0: dict[str, Any],
                 hand: np.ndarray, chosen: np.ndarray, wrong: np.ndarray, contested: np.ndarray, seconds: float) -> dict[str, Any]:
    """One trained round's row: test AUC and its gain over round 0, and what the ``chosen`` images revealed
    (``wrong``: entries round 0's vote had wrong; ``contested``: entries the sets disagree on)."""
    auc, per_finding = bed.test_auc(net)
    run = {"testbed": bed.name, "seed": bed.seed, "method": method, "score": ":".join(x for x in spec if x), "n": n,
           "auc": auc, "gain": auc - round0["auc"], "revealed": int((~np.isnan(hand)).sum()),
           "vote_wrong_revealed": int(wrong[chosen].sum()), "contested_revealed": int(contested[chosen].sum()),
           "seconds": seconds, "per_finding": per_finding, "settings": bed.settings}
    print(f"{bed.name} seed {bed.seed} {method} N={n}: AUC {auc:.4f} (gain {run['gain']:+.4f}); revealed "
          f"{run['revealed']} entries, {run['vote_wrong_revealed']} round 0's vote had wrong, {run['contested_revealed']} "
          f"contested ({seconds:.0f} s)", flush=True)
    return run


def iterated_rounds(bed: Any, method: str, spec: tuple[str, str], ev: QueueEvidence, round0: dict[str, Any],
                    ns: list[int], wrong: np.ndarray, contested: np.ndarray) -> list[dict[str, Any]]:
    """Label ``step`` images, retrain the vote with every hand label so far, re-rank, repeat.

    Each step ranks with the evidence of the latest model (its vote's ȳ and probabilities, the hand
    labels given so far scoring 0) and reveals the truth of its top ``step`` images not yet chosen.
    One trajectory serves every budget: the row for N is the model after the step that reaches N
    (N must be a multiple of the step). ``vote_wrong_revealed`` counts against round 0's vote, as
    for the one-shot rankings.
    """
    score, aggregate = spec[0][len("iterate:"):], spec[1]
    step = int(method.rsplit(":", 1)[1])
    if any(n % step for n in ns):
        raise ValueError(f"{method}: every budget must be a multiple of {step}, got {ns}")
    hand = np.full_like(bed.truth, np.nan)
    chosen = np.zeros(len(bed.truth), dtype=bool)
    current, runs = ev, []
    for reached in range(step, max(ns) + 1, step):
        scores = image_scores(finding_scores(score, with_hand(current, hand), ALL_METHODS), aggregate)
        scores[chosen] = -np.inf
        picked = top_n(scores, step)
        chosen[picked] = True
        hand[picked] = bed.truth[picked]
        net, strategy, items, seconds = train(bed, hand)
        if reached in ns:
            runs.append(scored_round(bed, net, method, spec, reached, round0, hand, chosen, wrong, contested, seconds))
        if reached < max(ns):
            outputs = vote_outputs(strategy, net, item_batches(items))
            current = QueueEvidence(bed.labels, ev.ds_posterior, outputs.vote, outputs.model)
    return runs


# ------------------------------------------------------------------------------------------------
# Tables and the plot
# ------------------------------------------------------------------------------------------------
def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per testbed: mean AUC and gain per method × N over seeds, and the N = 200 targets."""
    out: dict[str, Any] = {}
    for testbed in sorted({r["testbed"] for r in runs}):
        rows = [r for r in runs if r["testbed"] == testbed]
        seeds = sorted({r["seed"] for r in rows})
        base = _mean([r["auc"] for r in rows if r["method"] == "none"])
        table: dict[str, dict[int, dict[str, Any]]] = {}
        for r in rows:
            if r["method"] == "none":
                continue
            table.setdefault(r["method"], {}).setdefault(r["n"], {"auc": [], "gain": [], "wrong": [], "contested": [],
                                                                   "revealed": [], "score": r["score"]})
            cell = table[r["method"]][r["n"]]
            cell["auc"].append(r["auc"])
            cell["gain"].append(r["gain"])
            cell["wrong"].append(r["vote_wrong_revealed"])
            cell["contested"].append(r["contested_revealed"])
            cell["revealed"].append(r["revealed"])
        targets: dict[str, Any] = {}
        at = {m: _mean(table[m][200]["gain"]) for m in table if 200 in table[m]}
        if {"queue", "random", "activelab"} <= set(at):
            targets = {"queue_gain": at["queue"], "random_gain": at["random"], "activelab_gain": at["activelab"],
                       "ratio_to_random": at["queue"] / at["random"] if at["random"] > 0 else None,
                       "two_x_random": at["queue"] >= 2 * at["random"] if at["random"] > 0 else at["queue"] > 0,
                       "beats_activelab": at["queue"] > at["activelab"]}
        out[testbed] = {"seeds": seeds, "round0_auc": base, "table": table, "targets_n200": targets,
                        "settings": rows[0]["settings"]}
    return out


def markdown(summary: dict[str, Any], command: str) -> str:
    lines = ["# Simulated relabeling rounds", "", "Produced by:", "", f"    {command}", ""]
    for testbed, s in summary.items():
        ns = sorted({n for cells in s["table"].values() for n in cells})
        lines += [f"## {testbed} testbed (seeds {', '.join(map(str, s['seeds']))})", "",
                  "Settings: " + ", ".join(f"{k} {v}" for k, v in s["settings"].items()) + ".", "",
                  f"Round 0 (anchored vote, no hand labels): test mean AUC **{s['round0_auc']:.4f}**.", "",
                  "Test mean AUC after hand-labelling the top N (gain over round 0 in brackets; mean over seeds):", "",
                  "| ranking | score | " + " | ".join(f"N = {n}" for n in ns) + " |",
                  "|---|---|" + "---:|" * len(ns)]
        for method, cells in s["table"].items():
            score = next(iter(cells.values()))["score"]
            parts = [f"{_mean(cells[n]['auc']):.4f} ({_mean(cells[n]['gain']):+.4f})" if n in cells else "—" for n in ns]
            lines.append(f"| {method} | `{score}` | " + " | ".join(parts) + " |")
        lines += ["", "Revealed entries the round-0 vote had wrong / revealed entries on which the sets disagree "
                  "(mean over seeds):", "", "| ranking | " + " | ".join(f"N = {n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
        for method, cells in s["table"].items():
            parts = [f"{_mean(cells[n]['wrong']):.0f} / {_mean(cells[n]['contested']):.0f} of {_mean(cells[n]['revealed']):.0f}"
                     if n in cells else "—" for n in ns]
            lines.append(f"| {method} | " + " | ".join(parts) + " |")
        t = s["targets_n200"]
        if t:
            ratio = "—" if t["ratio_to_random"] is None else f"{t['ratio_to_random']:.1f}×"
            lines += ["", f"At N = 200: the queue gains {t['queue_gain']:+.4f}, random {t['random_gain']:+.4f} (ratio {ratio}; "
                      f"target ≥ 2×: **{'met' if t['two_x_random'] else 'not met'}**), ActiveLab {t['activelab_gain']:+.4f} "
                      f"(beats ActiveLab: **{'yes' if t['beats_activelab'] else 'no'}**)."]
        lines.append("")
    return "\n".join(lines)


#: Rankings that are baselines or controls, never candidates for the queue.
NOT_CANDIDATES = ("random", "random:1", "random:2", "placebo", "activelab", "activelab:max", "activelab:mean",
                  "disagreement", "disagreement:sum")


def relative_to_random(summary: dict[str, Any], ns: tuple[int, ...] = (200, 400)) -> dict[str, dict[str, Any]]:
    """Per ranking: its gain over random's mean gain (all random draws) in each testbed × N cell, and their mean.

    The development seeds choose the queue by this mean (the cells each testbed and budget weigh alike).
    """
    cells: dict[str, dict[str, float]] = {}
    for testbed, s in summary.items():
        for n in ns:
            draws = [_mean(c[n]["gain"]) for m, c in s["table"].items() if m.startswith("random") and n in c]
            if not draws or _mean(draws) <= 0:
                continue
            reference = _mean(draws)
            for method, c in s["table"].items():
                if n in c:
                    cells.setdefault(method, {})[f"{testbed} N={n}"] = _mean(c[n]["gain"]) / reference
    return {m: {"cells": v, "mean": _mean(list(v.values()))} for m, v in cells.items()}


def choice_markdown(summary: dict[str, Any], choose: bool) -> str:
    """Each ranking relative to random; with ``choose`` (development seeds only), the candidate the queue takes."""
    relative = relative_to_random(summary)
    if not relative:
        return ""
    names = sorted({c for r in relative.values() for c in r["cells"]})
    lines = ["## The choice of the queue (development seeds)" if choose else "## Each ranking relative to random", "",
             "Each ranking's gain divided by random's mean gain (every random draw) in the same testbed × N cell"
             + ("; the queue is the candidate (not a baseline or control) with the highest mean over the cells." if choose else "."),
             "",
             "| ranking | " + " | ".join(names) + " | mean |", "|---|" + "---:|" * (len(names) + 1)]
    order = sorted(relative, key=lambda m: -relative[m]["mean"])
    for method in order:
        r = relative[method]
        lines.append(f"| {method} | " + " | ".join(f"{r['cells'][c]:.2f}" if c in r["cells"] else "—" for c in names)
                     + f" | {r['mean']:.2f} |")
    chosen = next((m for m in order if m not in NOT_CANDIDATES and len(relative[m]["cells"]) == len(names)), None)
    if choose and chosen:
        lines += ["", f"Chosen: **{chosen}** (mean {relative[chosen]['mean']:.2f} × random's gain)."]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(5.5 * len(summary), 4), squeeze=False)
    for ax, (testbed, s) in zip(axes[0], summary.items()):
        for method, cells in s["table"].items():
            ns = sorted(cells)
            ax.plot([0, *ns], [s["round0_auc"], *(_mean(cells[n]["auc"]) for n in ns)], marker="o", label=method)
        ax.set_title(f"{testbed} testbed (seeds {', '.join(map(str, s['seeds']))})")
        ax.set_xlabel("hand-labelled images N")
        ax.set_ylabel("test mean AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="relabel_rounds.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--testbed", choices=["multilabel", "report"], help="which testbed to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--n", nargs="*", type=int, default=list(NS), help=f"hand-label budgets (default {' '.join(map(str, NS))})")
    p.add_argument("--methods", nargs="+", default=["comparison"],
                   help="rankings: 'comparison' (random, activelab, disagreement, queue), 'candidates' (every candidate "
                        f"of the development seeds) or names among {sorted(set(COMPARISON) | set(CANDIDATES) | set(ITERATED))}")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-train", type=int, default=6000, help="multilabel: images before the 20 %% validation split (default 6000)")
    p.add_argument("--reports", type=Path, help="report: the OpenI archive NLMCXR_reports.tgz")
    p.add_argument("--label-sets", type=Path, help="report: the pinned label sets (.npz), e.g. labels_209f33a.npz")
    p.add_argument("--fold", type=int, default=0, help="report: the cross-validation fold to train and test (default 0)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--cache", type=Path, default=None, help="report: cache of label sets and embeddings")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared machine)")
    p.add_argument("--round0-cache", type=Path, default=None,
                   help="folder that keeps each seed's round 0 (evidence and AUC, .npz) for later invocations")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "relabel_rounds", help="output path without suffix")
    p.add_argument("--collect", nargs="+", type=Path, default=None, help="only merge the .json files of earlier runs")
    p.add_argument("--choose", action="store_true",
                   help="development seeds: name the candidate with the highest mean gain relative to random (the queue)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python scripts/relabel_rounds.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    runs: list[dict[str, Any]] = []
    if args.collect:
        seen: set[tuple[Any, ...]] = set()
        for path in args.collect:
            for run in json.loads(path.read_text())["runs"]:
                # Every file repeats its seed's round 0; a cell is kept once.
                key = (run["testbed"], run["seed"], run["method"], run["n"])
                if key not in seen:
                    seen.add(key)
                    runs.append(run)
    else:
        if args.testbed is None:
            p.error("give --testbed multilabel|report, or --collect FILE.json ...")
        if args.testbed == "report" and (args.reports is None or args.label_sets is None):
            p.error("--testbed report needs --reports NLMCXR_reports.tgz and --label-sets FILE.npz")
        methods: dict[str, tuple[str, str]] = {}
        for name in args.methods:
            if name == "comparison":
                methods.update(COMPARISON)
            elif name == "candidates":
                methods.update(CANDIDATES)
            elif name in COMPARISON or name in CANDIDATES or name in ITERATED:
                methods[name] = COMPARISON.get(name) or CANDIDATES.get(name) or ITERATED[name]
            else:
                p.error(f"unknown ranking {name!r}")
        for seed in args.seeds:
            if args.testbed == "multilabel":
                bed: Any = MultilabelBed(seed, args.n_train, args.epochs)
                key = f"multilabel_s{seed}_n{args.n_train}_e{args.epochs}"
            else:
                bed = ReportBed(seed, args.reports, args.label_sets, args.fold, args.folds, args.epochs, args.cache)
                key = f"report_s{seed}_f{args.fold}of{args.folds}_e{args.epochs}"
            cache = args.round0_cache / f"{key}.npz" if args.round0_cache else None
            runs += run_seed(bed, methods, list(args.n), cache)
            # Written after every seed, so a long grid can be collected part by part.
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(json.dumps({"command": command, "runs": runs}, indent=1))
    summary = summarise(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "runs": runs, "summary": summary}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(summary, command) + "\n" + choice_markdown(summary, args.choose))
    plot(summary, args.out.with_suffix(".png"))
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
