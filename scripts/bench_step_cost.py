#!/usr/bin/env python
"""Cost of one training step per label strategy, relative to a plain step, measured in one run.

Same network, same batch, same optimizer type; each strategy is timed over ``--steps`` steps after
``--warmup`` steps, interleaved round-robin so that drift in the machine's speed hits every
strategy alike. Prints seconds per step and the ratio to ``single`` (a plain supervised step).

    python scripts/bench_step_cost.py                       # SmallCNN, 28×28, batch 32, M=5
    python scripts/bench_step_cost.py --network resnet50 --size 256 --batch 8 --sets 4 --classes 14
"""

from __future__ import annotations

import argparse
import time

import torch
from monai.data import DataLoader, Dataset

from l2v_monai.bundle_scripts.networks import NETWORKS
from l2v_monai.strategies import build_strategy
from l2v_monai.engine.trainer import LearningToVoteTrainer
from l2v_monai.experiments.vote_variants import PRE_SPLIT_ANCHORED, VARIANTS, variant_options


# Bench names of the learning-to-vote settings: (strategy, its options). The anchored ones are the
# vote's defaults before the variants split (bilevel objective, virtual step) with the named changes.
VOTE_SETTINGS: dict[str, tuple[str, dict]] = {
    "l2v": ("l2v", {"l2v": {"variant": "paper"}}),
    "l2v_anchored": ("l2v", {"l2v": PRE_SPLIT_ANCHORED}),
    "l2v_probe": ("l2v", {"l2v": {**PRE_SPLIT_ANCHORED, "vote_objective": "probe"}}),
    # The same vote without the virtual steps (ΔF_m = 0): what the M extra passes cost.
    "l2v_probe_nofb": ("l2v", {"l2v": {**PRE_SPLIT_ANCHORED, "vote_objective": "probe", "feedback": "none"}}),
}


def vote_setting(name: str) -> tuple[str, dict]:
    """A bench name → (strategy, options); ``l2v_default`` and ``abl_*`` are the bundle's vote and its ablations."""
    if name in VOTE_SETTINGS:
        return VOTE_SETTINGS[name]
    if name in VARIANTS:
        return "l2v", {"l2v": variant_options(name, 0)}
    return name, {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="small_cnn", choices=sorted(NETWORKS))
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sets", type=int, default=5)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--multilabel", action="store_true", help="multi-label targets (default: one-hot multi-class)")
    p.add_argument("--strategies", nargs="+",
                   default=["single", "majority", "cm", "posterior_vote", "l2v", "l2v_anchored", "l2v_probe"],
                   help="strategy names; posterior_vote is the bundle's default, l2v the paper variant, l2v_anchored the anchored one with the bilevel "
                        "vote objective, l2v_probe the anchored one with the probe objective, l2v_default the bundle's "
                        "vote and abl_* its ablations (scripts/vote_variants.py)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(args.batch, 1, args.size, args.size, generator=g)
    if args.multilabel:
        labels = (torch.rand(args.batch, args.sets, args.classes, generator=g) > 0.7).float()
    else:
        labels = torch.nn.functional.one_hot(torch.randint(0, args.classes, (args.batch, args.sets), generator=g), args.classes).float()
    # The consensus targets are fitted before training; for timing, the first set stands in for them.
    batch = {"image": image, "labels": labels, "target": labels[:, 0]}
    engines = {}
    for name in args.strategies:
        torch.manual_seed(0)
        net = NETWORKS[args.network](num_outputs=args.classes, in_channels=1).to(args.device)
        kind, options = vote_setting(name)
        strategy = build_strategy(kind, num_sets=args.sets, num_outputs=args.classes, feature_dim=net.num_features,
                                  multiclass=not args.multilabel, options=options)
        # Fitted once before training, as attach_targets does (the posterior vote starts its tables here).
        strategy.aggregate(labels.numpy())
        opt = torch.optim.Adam(strategy.param_groups(net, 1e-3))
        loader = DataLoader(Dataset([batch]), batch_size=None)
        engines[name] = LearningToVoteTrainer(args.device, 1, loader, net, opt, strategy, decollate=False)

    def step(name: str) -> float:
        engine = engines[name]
        engine.state.device = torch.device(args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        engine._iteration(engine, batch)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for name in engines:
            step(name)
    times = {name: 0.0 for name in engines}
    for _ in range(args.steps):
        for name in engines:
            times[name] += step(name)
    base = times.get("single", min(times.values()))
    print(f"network={args.network} size={args.size} batch={args.batch} M={args.sets} "
          f"outputs={args.classes} device={args.device} steps={args.steps} threads={torch.get_num_threads()}")
    print("| strategy | s / step | relative to a plain step |")
    print("|---|---|---|")
    for name, total in times.items():
        print(f"| {name} | {total / args.steps:.4f} | {total / base:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
