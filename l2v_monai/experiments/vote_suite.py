"""The robustness suite the default strategy is chosen on: one command, one table, paired intervals.

Every run goes through the product's :func:`~l2v_monai.strategies.build_strategy`,
:func:`~l2v_monai.strategies.attach_targets` and :class:`~l2v_monai.engine.trainer.LearningToVoteTrainer`;
only the label strategy changes within a cell. Cells (``--cells``; :data:`CELLS`):

* ``poc_*``: the proof-of-concept family (simulated annotators of :mod:`l2v_monai.experiments.annotators`
  on scikit-learn's digits, or Fashion-MNIST where a cell says so): noise levels, 2–6 annotators, with
  and without the adversarial annotator (AD), and annotators with missing labels (each (image,
  annotator) label dropped with probability 0.3, at least one kept). Metric: clean test accuracy.
* ``ml_*``: the synthetic multi-label testbed (:mod:`l2v_monai.experiments.multilabel_testbed`).
  Metric: test mean AUC against the truth.
* ``img_independent`` / ``img_hedged``: the real-noise image-regime testbed
  (:mod:`l2v_monai.experiments.image_regime`): the project's report labelers' label sets on the OpenI
  reports, MeSH truth, pictures drawn from the truth with either coupling; k-fold over reports.
  Metric: mean AUC against MeSH over the findings with both classes in the test fold.
* ``text_ours`` / ``text_independent``: the OpenI report testbed (:mod:`l2v_monai.experiments.report_testbed`)
  with either labeler pair (``--label-sets`` / ``--independent-label-sets``).

Every strategy of a cell trains for the cell's epochs (:data:`KIND_EPOCHS`, or the cell's own).

Units: a (seed, fold) pair. For the report-based cells the fold is a k-fold split of the reports
(seeded by the seed); for the simulated cells each fold is a fresh draw of the data. Every
strategy of a cell sees the same units, so differences are paired. Seeds ≥ 100 are development
seeds (for choices); seeds below 100 are report seeds; tables never mix them.

Intervals: a seeded bootstrap over units of the mean paired difference (strategy − majority vote,
strategy − Dawid–Skene), 95 % percentile interval. Rule (:func:`rule_outcome`): a strategy passes a
cell when its mean is no more than 0.5 point (0.005) below the better of majority vote and
Dawid–Skene; on the image-regime cells it must also be above both.

    python scripts/vote_suite.py --reports NLMCXR_reports.tgz --label-sets labels.npz --seeds 100 101 --folds 3 \\
        --cells img_independent img_hedged --out results/vote_suite_dev.md

Runs are appended to ``<out>.runs.jsonl`` as they finish, so a suite can be split across processes
(``--cells`` / ``--strategies``) and resumed; the table is rebuilt from every run in that file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
DEV_SEED_START = 100
#: 0.5 point, in the metric's units (accuracy / AUC in [0, 1]).
RULE_MARGIN = 0.005
REFERENCES = ("mv", "dawid_skene")


# --------------------------------------------------------------------------------------------
# Strategies: name -> (label_strategy, options for (seed, cell kind), description)
# --------------------------------------------------------------------------------------------

def _vote(name: str) -> Callable[[int, str], dict[str, Any]]:
    def options(seed: int, kind: str) -> dict[str, Any]:
        from l2v_monai.experiments.vote_variants import variant_options

        return variant_options(name, seed)

    return options


def _mv(seed: int, kind: str) -> dict[str, Any]:
    # Report labelers almost never invent a positive, so ties → 1 is the stronger majority vote there
    # (docs/vote.md); for simulated annotators and the multi-label testbed, random ties (the paper's).
    return {"seed": seed, "ties": "positive" if kind in ("img", "text") else "random"}


STRATEGIES: dict[str, tuple[str, Callable[[int, str], dict[str, Any]], str]] = {
    "truth": ("single", lambda s, k: {"label_set": 0}, "trained on the truth (the headroom)"),
    "mv": ("majority", _mv, "majority vote (random ties; ties → 1 on report labels)"),
    "dawid_skene": ("dawid_skene", lambda s, k: {}, "Dawid–Skene"),
    "posterior_vote": ("posterior_vote", lambda s, k: {},
                       "the posterior vote (confusion matrices learned online, the model's prediction as a voter)"),
    "posterior_independent": ("posterior_vote", lambda s, k: {"sets": "independent"},
                              "the posterior vote with one confusion matrix per set (no joint answer table)"),
    "posterior_unmasked": ("posterior_vote", lambda s, k: {"min_confidence": 0.0},
                           "the posterior vote with every entry in the loss (no min_confidence)"),
    "posterior_masked": ("posterior_vote", lambda s, k: {"min_confidence": 0.9},
                         "the posterior vote with entries below a posterior of 0.9 out of the loss on one-hot data too"),
    "posterior_unshrunk": ("posterior_vote", lambda s, k: {"shrinkage": 0.01},
                           "the posterior vote with its joint tables barely shrunk toward per-set rates (0.01 items)"),
    "l2v_default": ("l2v", _vote("l2v_default"), "the anchored vote (strategy_options#l2v of train.json and cifar10.json)"),
    "ctrl_ds999_masked": ("consensus", lambda s, k: {"consensus": "dawid_skene", "min_confidence": 0.999},
                          "control: Dawid–Skene ≥ 0.999, the rest masked (the default's anchor alone)"),
    "ctrl_ds_else_mv": ("consensus", lambda s, k: {"consensus": "dawid_skene_else_majority", "min_confidence": 0.999},
                        "control: Dawid–Skene where ≥ 0.999, majority vote elsewhere"),
    "overrule": ("overrule", lambda s, k: {**_mv(s, k), "confidence": 0.9, "warmup": 200},
                 "candidate: majority vote, contested entries overruled by the model's confident prediction"),
    "l2v_ds09": ("l2v", _vote("abl_anchor_ds_09"), "candidate: the anchored vote with the anchor at posterior ≥ 0.9"),
    "l2v_previous_cifar10": ("l2v", _vote("l2v_previous_cifar10"), "previous cifar10.json vote (meta, DS ≥ 0.9, virtual step)"),
    "l2v_paper": ("l2v", lambda s, k: {"variant": "paper", "feedback": "features", "seed": s}, "the paper's method (variant: paper)"),
}


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------

#: Epochs per cell kind (a cell's ``epochs`` parameter overrides): every strategy of a cell trains as long.
#: The report testbed's cells train for its own ``epochs`` (8).
KIND_EPOCHS = {"poc": 8, "ml": 5, "img": 5, "text": 8}

#: cell -> (kind, parameters, description)
CELLS: dict[str, tuple[str, dict[str, Any], str]] = {
    "poc_n02_5ad": ("poc", {"noise": 0.2, "annotators": ["HS", "SF", "OC", "AD", "AVG"]}, "noise 0.2, 5 annotators incl. AD"),
    "poc_n05_5ad": ("poc", {"noise": 0.5, "annotators": ["HS", "SF", "OC", "AD", "AVG"]}, "noise 0.5, 5 annotators incl. AD"),
    "poc_n08_5ad": ("poc", {"noise": 0.8, "annotators": ["HS", "SF", "OC", "AD", "AVG"]}, "noise 0.8, 5 annotators incl. AD"),
    "poc_n05_4": ("poc", {"noise": 0.5, "annotators": ["HS", "SF", "OC", "AVG"]}, "noise 0.5, 4 annotators, no AD"),
    "poc_n05_2": ("poc", {"noise": 0.5, "annotators": ["HS", "OC"]}, "noise 0.5, 2 annotators"),
    "poc_n05_3ad": ("poc", {"noise": 0.5, "annotators": ["HS", "OC", "AD"]}, "noise 0.5, 3 annotators incl. AD"),
    "poc_n05_5ad_missing": ("poc", {"noise": 0.5, "annotators": ["HS", "SF", "OC", "AD", "AVG"], "missing": 0.3},
                            "noise 0.5, 5 annotators incl. AD, 30 % of labels missing"),
    "poc_n03_4_missing": ("poc", {"noise": 0.3, "annotators": ["HS", "SF", "OC", "AVG"], "missing": 0.3},
                          "noise 0.3, 4 annotators, 30 % of labels missing"),
    "poc_n05_6ad": ("poc", {"noise": 0.5, "annotators": ["HS", "SF", "OC", "AD", "AVG"], "second_draw": ["HS"]},
                    "noise 0.5, 6 annotators incl. AD (a second hammer-spammer, drawn independently)"),
    "poc_fmnist_n06_5ad": ("poc", {"noise": 0.6, "annotators": ["HS", "SF", "OC", "AD", "AVG"], "dataset": "fashion_mnist",
                                   "max_train": 6000, "epochs": 6}, "Fashion-MNIST (6,000 training images), noise 0.6, 5 annotators incl. AD"),
    "poc_fmnist_n04_3": ("poc", {"noise": 0.4, "annotators": ["SF", "OC", "AVG"], "dataset": "fashion_mnist", "max_train": 6000,
                                  "epochs": 6},
                         "Fashion-MNIST (6,000 training images), noise 0.4, 3 annotators, no AD"),
    "ml_default": ("ml", {}, "synthetic multi-label testbed (4 sets, 5 findings)"),
    "img_independent": ("img", {"coupling": "independent"}, "OpenI labelers, MeSH truth, pictures; noise independent of the picture"),
    "img_hedged": ("img", {"coupling": "hedged"}, "OpenI labelers, MeSH truth, pictures; disputed entries fainter"),
    "text_ours": ("text", {"label_sets": "ours"}, "OpenI report text, our labelers"),
    "text_independent": ("text", {"label_sets": "independent"}, "OpenI report text, independent labelers"),
}


def drop_labels(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Set each (sample, set) label row to NaN with probability ``fraction``, keeping at least one set per sample."""
    labels = np.array(labels, dtype=np.float32, copy=True)
    s, m = labels.shape[:2]
    drop = rng.random((s, m)) < fraction
    keep = rng.integers(0, m, size=s)
    drop[np.arange(s), keep] = False
    labels[drop] = np.nan
    return labels


def _poc_data(params: dict[str, Any], unit_seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from l2v_monai.experiments.poc_data import make_poc_splits

    splits = make_poc_splits(params.get("dataset", args.poc_dataset), annotators=params["annotators"], noise=params["noise"],
                             max_train=params.get("max_train", args.poc_max_train), seed=unit_seed)
    train = splits["training"]
    labels = np.stack([it["labels"] for it in train])
    k = splits["num_classes"]
    names = list(params["annotators"])
    if params.get("second_draw"):
        # More annotators than the five types: a type again, drawn with another seed.
        from l2v_monai.experiments.annotators import one_hot_label_sets, simulate_labels

        clean = np.array([it["clean"] for it in train])
        more = simulate_labels(clean, params["second_draw"], params["noise"], unit_seed + 500_000, k)
        labels = np.concatenate([labels, one_hot_label_sets(more, k).astype(labels.dtype)], axis=1)
        names += [f"{n}_2" for n in params["second_draw"]]
    if params.get("missing"):
        labels = drop_labels(labels, params["missing"], np.random.default_rng([unit_seed, 7]))
    return {
        "images": np.stack([it["image"] for it in train]), "labels": labels,
        "truth": np.eye(k, dtype=np.float32)[[it["clean"] for it in train]],
        "test_images": np.stack([it["image"] for it in splits["test"]]),
        "test_truth": np.stack([it["label"] for it in splits["test"]]),
        "set_names": names, "multiclass": True, "findings": [str(i) for i in range(k)],
        "in_channels": splits["in_channels"],
    }


def _ml_data(params: dict[str, Any], unit_seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from l2v_monai.experiments.multilabel_testbed import make_multilabel_testbed

    data = make_multilabel_testbed(n_train=args.ml_n_train, n_test=1000, seed=unit_seed)
    train = data["training"]
    return {
        "images": np.stack([it["image"] for it in train]), "labels": np.stack([it["labels"] for it in train]),
        "truth": np.stack([it["truth"] for it in train]),
        "test_images": np.stack([it["image"] for it in data["test"]]),
        "test_truth": np.stack([it["label"] for it in data["test"]]),
        "set_names": data["label_sets"], "multiclass": False, "findings": data["findings"], "in_channels": 1,
    }


_CORPUS: dict[str, Any] = {}


def _corpus(args: argparse.Namespace, which: str = "ours"):
    from l2v_monai.labelers.openi_corpus import load_openi_corpus

    if which not in _CORPUS:
        if args.reports is None:
            raise SystemExit("report-based cells need --reports (the OpenI report archive, NLMCXR_reports.tgz)")
        label_file = args.label_sets if which == "ours" else args.independent_label_sets
        if which == "independent" and label_file is None:
            raise SystemExit("text_independent needs --independent-label-sets (scripts/independent_labelers.py --out ...)")
        _CORPUS[which] = load_openi_corpus(args.reports, label_file=label_file)
    return _CORPUS[which]


def _img_data(params: dict[str, Any], seed: int, fold: int, args: argparse.Namespace) -> dict[str, Any]:
    from l2v_monai.experiments.image_regime import make_image_regime
    from l2v_monai.experiments.report_testbed import kfold_indices

    corpus = _corpus(args)
    world = make_image_regime(corpus.label_sets, corpus.truth, corpus.findings, params["coupling"], seed=seed, size=args.img_size,
                              contrast=args.img_contrast)
    train, test = kfold_indices(len(corpus.texts), args.folds, seed)[fold]
    return {
        # The pictures draw an untagged finding as absent, so the truth row trains on that picture truth
        # (NaN → 0); scoring keeps MeSH's untagged entries out.
        "images": world["images"][train], "labels": corpus.label_sets[train], "truth": np.nan_to_num(corpus.truth[train]),
        "test_images": world["images"][test], "test_truth": corpus.truth[test],
        "set_names": corpus.set_names, "multiclass": False, "findings": corpus.findings, "in_channels": 1,
    }


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------

def train_and_score(data: dict[str, Any], strategy_name: str, seed: int, kind: str, args: argparse.Namespace,
                    torch_seed: int) -> dict[str, Any]:
    """Train SmallCNN through the product's strategy and trainer on ``data``; score on its test split."""
    from monai.data import DataLoader, Dataset

    from l2v_monai.bundle_scripts.networks import SmallCNN
    from l2v_monai.engine.trainer import LearningToVoteTrainer
    from l2v_monai.evaluation import per_finding_auc
    from l2v_monai.strategies import attach_targets, build_strategy

    label_strategy, options_fn, _ = STRATEGIES[strategy_name]
    options = options_fn(seed, kind)
    labels = data["labels"]
    if strategy_name == "truth":
        labels = np.repeat(data["truth"][:, None], labels.shape[1], axis=1)
    multiclass = data["multiclass"]
    n_out = data["test_truth"].shape[1]
    torch.manual_seed(torch_seed)
    net = SmallCNN(num_outputs=n_out, in_channels=data["in_channels"], width=args.width)
    strategy = build_strategy(label_strategy, num_sets=labels.shape[1], num_outputs=n_out, feature_dim=net.num_features,
                              multiclass=multiclass, label_sets=data["set_names"], options={label_strategy: options})
    items = attach_targets([{"image": data["images"][i], "labels": labels[i]} for i in range(len(labels))], strategy)
    anchor_accuracy = None
    if "target" in items[0] and strategy_name != "truth":
        anchor_accuracy = target_accuracy(np.stack([it["target"] for it in items]), data["truth"], multiclass)
    loader = DataLoader(Dataset(items), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(torch_seed))
    trainer = LearningToVoteTrainer("cpu", cell_epochs(kind, data.get("epochs"), args), loader, net, torch.optim.Adam(strategy.param_groups(net, 1e-3)),
                                    strategy, decollate=False)
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        x = torch.from_numpy(data["test_images"])
        logits = torch.cat([net(x[i : i + 512]) for i in range(0, len(x), 512)])
    if not bool(torch.isfinite(logits).all()):
        # A NaN network scores as chance; a table must not carry that as a result.
        raise RuntimeError(f"{strategy_name} (seed {seed}) trained to a network with non-finite outputs: no score recorded")
    truth = data["test_truth"]
    if multiclass:
        score = float((logits.argmax(1).numpy() == truth.argmax(1)).mean())
    else:
        score = float(per_finding_auc(truth, torch.sigmoid(logits).numpy(), data["findings"])["macro_auc"])
    return {"score": score, "seconds": seconds, "anchor_accuracy": anchor_accuracy}


def target_accuracy(targets: np.ndarray, truth: np.ndarray, multiclass: bool) -> float | None:
    """Accuracy of fitted targets against the truth where both are defined (argmax for one-hot, ≥ 0.5 otherwise)."""
    if multiclass:
        ok = ~np.isnan(targets).any(axis=1)
        return float((targets[ok].argmax(1) == truth[ok].argmax(1)).mean()) if ok.any() else None
    ok = ~np.isnan(targets) & ~np.isnan(truth)
    return float(((targets[ok] >= 0.5) == (truth[ok] == 1)).mean()) if ok.any() else None


def cell_epochs(kind: str, own: int | None, args: argparse.Namespace) -> int:
    """A cell's epochs: ``--epochs`` when given (not for report-testbed cells), else the cell's own, else its kind's."""
    if kind == "text":
        return KIND_EPOCHS["text"]
    return args.epochs or own or KIND_EPOCHS[kind]


def run_unit(cell: str, strategy: str, seed: int, fold: int, args: argparse.Namespace) -> dict[str, Any]:
    kind, params, _ = CELLS[cell]
    if kind == "text":
        from l2v_monai.experiments.report_testbed import run_fold

        label_strategy, options_fn, _ = STRATEGIES[strategy]
        corpus = _corpus(args, params["label_sets"])
        r = run_fold(corpus, label_strategy, options_fn(seed, kind), seed, fold, args.folds,
                     train_on_truth=strategy == "truth")
        return {"score": r["mean_auc"], "seconds": r["seconds"], "anchor_accuracy": None}
    unit_seed = seed * 1000 + fold
    if kind == "img":
        data = _img_data(params, seed, fold, args)
    elif kind == "poc":
        data = _poc_data(params, unit_seed, args)
    else:
        data = _ml_data(params, unit_seed, args)
    data["epochs"] = params.get("epochs")
    return train_and_score(data, strategy, seed, kind, args, unit_seed)


# --------------------------------------------------------------------------------------------
# Intervals and the rule
# --------------------------------------------------------------------------------------------

def paired_interval(a: dict[tuple, float], b: dict[tuple, float], n_boot: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """Mean of ``a − b`` over their shared units and its 95 % seeded bootstrap percentile interval (units resampled)."""
    units = sorted(set(a) & set(b))
    if not units:
        return None
    from l2v_monai.evaluation.bootstrap import percentile_interval

    d = np.array([a[u] - b[u] for u in units])
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi, _ = percentile_interval(boot)
    return {"mean": float(d.mean()), "low": float(lo), "high": float(hi), "units": len(d)}


def rule_outcome(mean: float, mv: float, ds: float, image_regime: bool, margin: float = RULE_MARGIN) -> tuple[bool, str]:
    """(passes, why): no more than ``margin`` below max(MV, DS); on image-regime cells also above both."""
    best = max(mv, ds)
    if mean < best - margin:
        return False, f"{(best - mean) * 100:.1f} points below the better of MV and DS"
    if image_regime and not (mean > mv and mean > ds):
        return False, "not above both MV and DS on an image-regime cell"
    return True, "passes"


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """cell → strategy → mean, units, intervals against MV and DS, the rule's outcome."""
    by: dict[str, dict[str, dict[tuple, float]]] = {}
    epochs: dict[str, set] = {}
    for r in runs:
        epochs.setdefault(r["cell"], set()).add(r.get("epochs"))
    mixed = {cell: sorted(e, key=str) for cell, e in epochs.items() if len(e) > 1}
    if mixed:
        raise SystemExit(f"runs of one cell trained for different epochs, so they cannot be paired: {mixed}; "
                         "remove one kind from the runs file and run it again")
    for r in runs:
        by.setdefault(r["cell"], {}).setdefault(r["strategy"], {})[(r["seed"], r["fold"])] = r["score"]
    out: dict[str, dict[str, Any]] = {}
    for cell, strategies in by.items():
        out[cell] = {}
        mv, ds = strategies.get("mv"), strategies.get("dawid_skene")
        for name, scores in strategies.items():
            row: dict[str, Any] = {"mean": statistics.fmean(scores.values()), "units": len(scores)}
            row["vs_mv"] = paired_interval(scores, mv) if mv and name != "mv" else None
            row["vs_ds"] = paired_interval(scores, ds) if ds and name != "dawid_skene" else None
            image_regime = CELLS.get(cell, ("",))[0] == "img"
            # "Above both" cannot hold for MV or DS themselves; on image-regime cells they are the references only.
            if mv and ds and name != "truth" and not (image_regime and name in REFERENCES):
                shared = sorted(set(scores) & set(mv) & set(ds))
                if shared:
                    row["rule"] = rule_outcome(statistics.fmean(scores[u] for u in shared), statistics.fmean(mv[u] for u in shared),
                                               statistics.fmean(ds[u] for u in shared), image_regime)
            out[cell][name] = row
    return out


def _ci(x: dict[str, Any] | None) -> str:
    if x is None:
        return "—"
    return f"{x['mean'] * 100:+.2f} [{x['low'] * 100:+.2f}, {x['high'] * 100:+.2f}]"


def table(summary: dict[str, dict[str, Any]], runs: list[dict[str, Any]], header: Sequence[str]) -> str:
    seconds: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        seconds.setdefault((r["cell"], r["strategy"]), []).append(r["seconds"])
    lines = list(header) + [
        "| cell | strategy | mean | Δ vs MV, points [95 % CI] | Δ vs DS, points [95 % CI] | rule | units | s / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(STRATEGIES)}
    for cell in sorted(summary, key=lambda c: list(CELLS).index(c) if c in CELLS else 99):
        for name in sorted(summary[cell], key=lambda n: order.get(n, 99)):
            row = summary[cell][name]
            rule = row.get("rule")
            rule_text = "—" if rule is None else ("pass" if rule[0] else f"**fail** ({rule[1]})")
            lines.append(f"| {cell} | {name} | {row['mean']:.4f} | {_ci(row['vs_mv'])} | {_ci(row['vs_ds'])} | {rule_text} | "
                         f"{row['units']} | {statistics.fmean(seconds[(cell, name)]):.0f} |")
    return "\n".join(lines) + "\n"


def rule_matrix(summary: dict[str, dict[str, Any]]) -> str:
    """One row per cell, one column per strategy: the mean and the rule's outcome (✓ pass, ✗ fail, ref: MV/DS on image cells)."""
    names = [n for n in STRATEGIES if any(n in row for row in summary.values())]
    lines = ["| cell | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cell in sorted(summary, key=lambda c: list(CELLS).index(c) if c in CELLS else 99):
        cells = []
        for name in names:
            row = summary[cell].get(name)
            if row is None:
                cells.append("")
                continue
            rule = row.get("rule")
            mark = "" if name == "truth" else " ref" if rule is None else " ✓" if rule[0] else " ✗"
            cells.append(f"{row['mean']:.3f}{mark}")
        lines.append(f"| {cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--strategies", nargs="+", default=["truth", "mv", "dawid_skene", "posterior_vote", "l2v_default"],
                   choices=list(STRATEGIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[100, 101])
    p.add_argument("--folds", type=int, default=3, help="units per seed: k-fold splits of the reports, or fresh draws")
    p.add_argument("--epochs", type=int, default=None,
                   help="override every cell's epochs (default: the cell's own, KIND_EPOCHS); runs of one cell must agree")
    p.add_argument("--width", type=int, default=16, help="SmallCNN width")
    p.add_argument("--img-size", type=int, default=24)
    p.add_argument("--img-contrast", type=float, default=0.25, help="pattern contrast of the image-regime pictures")
    p.add_argument("--poc-dataset", default="digits", choices=["digits", "fashion_mnist"])
    p.add_argument("--poc-max-train", type=int, default=None)
    p.add_argument("--ml-n-train", type=int, default=3000)
    p.add_argument("--reports", type=Path, default=None, help="the OpenI report archive (NLMCXR_reports.tgz)")
    p.add_argument("--label-sets", type=Path, default=None, help="our labelers' label sets (.npz; written if absent)")
    p.add_argument("--independent-label-sets", type=Path, default=None, help="the independent labelers' label sets (.npz)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "vote_suite.md")
    p.add_argument("--table-only", action="store_true", help="rebuild the table from the runs file, run nothing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = [s >= DEV_SEED_START for s in args.seeds]
    if any(dev) and not all(dev):
        raise SystemExit(f"development seeds (≥ {DEV_SEED_START}) and report seeds (< {DEV_SEED_START}) go in separate runs")
    runs_path = args.out.with_suffix(".runs.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["cell"], r["strategy"], r["seed"], r["fold"]) for r in read_runs(runs_path)}
    command = "python scripts/vote_suite.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for cell in [] if args.table_only else args.cells:
        for seed in args.seeds:
            for fold in range(args.folds):
                for strategy in args.strategies:
                    if (cell, strategy, seed, fold) in done:
                        continue
                    r = run_unit(cell, strategy, seed, fold, args)
                    r.update(cell=cell, strategy=strategy, seed=seed, fold=fold,
                             epochs=cell_epochs(CELLS[cell][0], CELLS[cell][1].get("epochs"), args))
                    with runs_path.open("a") as f:
                        f.write(json.dumps(r) + "\n")
                    print(f"{cell} {strategy} seed {seed} fold {fold}: {r['score']:.4f} ({r['seconds']:.0f} s)", flush=True)
    runs = read_runs(runs_path)
    seeds = sorted({r["seed"] for r in runs})
    phase = "development" if all(s >= DEV_SEED_START for s in seeds) else "report" if all(s < DEV_SEED_START for s in seeds) else "MIXED"
    summary = summarize(runs)
    header = [f"Robustness suite, {phase} seeds {', '.join(map(str, seeds))}. Last command:", "", f"    {command}", "",
              "Δ: paired mean difference in points (accuracy or mean AUC × 100) with a seeded bootstrap 95 % interval over "
              "(seed, fold) units. Rule: no more than 0.5 point below the better of MV and DS; on img_* cells also above both.", ""]
    args.out.write_text(table(summary, runs, header) + "\nThe rule per cell (mean; ✓ passes, ✗ fails):\n\n" + rule_matrix(summary))
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
