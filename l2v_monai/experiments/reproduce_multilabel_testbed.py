"""Compare label strategies on the multi-label testbed with a known truth.

Four label sets (two labelers × uncertain→0/1, see ``l2v_monai.experiments.multilabel_testbed``), one
SmallCNN, one trainer; only the strategy changes. Reports the test mean AUC against the *truth*
and, for selection, the mean AUC on the noisy validation split against the noisy majority vote
(ties left out): the only number a user without clean labels could choose by.

    python scripts/reproduce_multilabel_testbed.py --seeds 0 1 --out results/multilabel_testbed.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset

from l2v_monai.experiments.vote_variants import PRE_SPLIT_ANCHORED, VARIANTS, variant_options

from l2v_monai.experiments.multilabel_testbed import make_multilabel_testbed
from l2v_monai.evaluation import per_finding_auc
from l2v_monai.bundle_scripts.networks import SmallCNN
from l2v_monai.labels import majority_vote
from l2v_monai.strategies import attach_targets, build_strategy
from l2v_monai.engine.trainer import LearningToVoteTrainer

ROOT = Path(__file__).resolve().parents[2]

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "truth": ("single", {"label_set": 0}),
    "A_u0": ("single", {"label_set": 0}),
    "A_u1": ("single", {"label_set": 1}),
    "mv": ("majority", {}),
    "mv_ties1": ("majority", {"ties": "positive"}),
    "dawid_skene": ("dawid_skene", {}),
    "cm": ("cm", {"lr": 0.01}),
    # Train only on the unanimous entries: the anchor the probe-trained vote starts from.
    "consensus": ("consensus", {"consensus": "majority", "min_confidence": 1.0}),
    "l2v_paper": ("l2v", {"variant": "paper", "feedback": "features"}),
    "l2v_anchored": ("l2v", {**PRE_SPLIT_ANCHORED, "vote_lr": 0.01}),
    # The same, anchored on unanimous labels instead of confident Dawid–Skene.
    "l2v_anchored_unanimous": ("l2v", {**PRE_SPLIT_ANCHORED, "vote_lr": 0.01, "consensus": "majority", "min_confidence": 1.0}),
    # The vote trained to agree with an anchor probe instead of the bilevel score (train.json's default).
    "l2v_anchored_probe": ("l2v", {**PRE_SPLIT_ANCHORED, "vote_objective": "probe", "vote_lr": 0.01, "consensus": "majority",
                                   "min_confidence": 1.0, "refined": "soft"}),
    "l2v_anchored_probe_hard": ("l2v", {**PRE_SPLIT_ANCHORED, "vote_objective": "probe", "vote_lr": 0.01,
                                        "consensus": "majority", "min_confidence": 1.0, "refined": "hard"}),
    # The probe vote without virtual steps (does ΔF_m earn its cost?).
    "l2v_anchored_probe_nofb": ("l2v", {"variant": "anchored", "vote_objective": "probe", "vote_lr": 0.01, "consensus": "majority",
                                        "min_confidence": 1.0, "refined": "soft", "feedback": "none"}),
    "l2v_probe_ds_hard_nofb": ("l2v", {"variant": "anchored", "vote_objective": "probe", "vote_lr": 0.01, "consensus": "dawid_skene",
                                       "min_confidence": 0.9, "refined": "hard", "feedback": "none"}),
    # The anchored vote (train.json's strategy_options#l2v) and its ablations: scripts/vote_variants.py.
    **{name: ("l2v", None) for name in VARIANTS},
}


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict(net: torch.nn.Module, items: list[dict]) -> np.ndarray:
    net.eval()
    images = torch.from_numpy(np.stack([it["image"] for it in items])).to(DEVICE)
    return torch.sigmoid(torch.cat([net(images[i : i + 512]) for i in range(0, len(images), 512)])).cpu().numpy()


def run(method: str, seed: int, epochs: int, n_train: int) -> dict[str, Any]:
    data = make_multilabel_testbed(n_train=n_train, n_test=2000, seed=seed)
    name, options = METHODS[method]
    if options is None:
        options = variant_options(method, seed)
    training = data["training"]
    if method == "truth":
        training = [{**it, "labels": np.stack([it["truth"]] * 4)} for it in training]
    torch.manual_seed(seed)
    net = SmallCNN(num_outputs=len(data["findings"]), in_channels=1).to(DEVICE)
    strategy = build_strategy(name, num_sets=4, num_outputs=len(data["findings"]), feature_dim=net.num_features,
                              label_sets=data["label_sets"], options={name: options})
    items = attach_targets(training, strategy)
    loader = DataLoader(Dataset(items), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    trainer = LearningToVoteTrainer(DEVICE, epochs, loader, net, torch.optim.Adam(strategy.param_groups(net, 1e-3)), strategy,
                                    decollate=False)
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    test = per_finding_auc(np.stack([it["label"] for it in data["test"]]), predict(net, data["test"]), data["findings"])
    noisy = majority_vote(torch.from_numpy(np.stack([it["labels"] for it in data["validation"]])), False, ties="nan").numpy()
    val = per_finding_auc(noisy, predict(net, data["validation"]), data["findings"])
    return {"method": method, "seed": seed, "test_mean_auc": test["macro_auc"], "val_noisy_mean_auc": val["macro_auc"],
            "seconds": seconds, "device": str(DEVICE)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-train", type=int, default=6000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "multilabel_testbed.md")
    p.add_argument("--collect", nargs="*", type=Path, default=None,
                   help="only merge the .json files of earlier runs (e.g. one process per method) into one table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs: dict[str, list[dict[str, Any]]] = {}
    command = "python scripts/reproduce_multilabel_testbed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path in args.collect or []:
        for method, results in json.loads(path.read_text()).items():
            runs.setdefault(method, []).extend(results)
    for method in args.methods if args.collect is None else []:
        for seed in args.seeds:
            result = run(method, seed, args.epochs, args.n_train)
            runs.setdefault(method, []).append(result)
            print(f"{method} seed {seed}: test mean AUC {result['test_mean_auc']:.4f}, "
                  f"noisy-val mean AUC {result['val_noisy_mean_auc']:.4f} ({result['seconds']:.0f} s)", flush=True)
    lines = [
        f"Multi-label testbed ({args.n_train} training images, 20% noisy validation, 2000 test, 5 findings, "
        f"{args.epochs} epochs, SmallCNN; seeds {', '.join(map(str, args.seeds))}). Produced by:", "", f"    {command}", "",
        "| method | test mean AUC vs truth (mean) | per seed | noisy-validation mean AUC (mean) | s / run | device |",
        "|---|---|---|---|---|---|",
    ]
    for method, results in runs.items():
        test = [r["test_mean_auc"] for r in results]
        lines.append(f"| {method} | {statistics.fmean(test):.4f} | {' / '.join(f'{t:.4f}' for t in test)} | "
                     f"{statistics.fmean(r['val_noisy_mean_auc'] for r in results):.4f} | "
                     f"{statistics.fmean(r['seconds'] for r in results):.0f} | "
                     f"{', '.join(sorted({r.get('device', '?') for r in results}))} |")
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
