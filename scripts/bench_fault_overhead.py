#!/usr/bin/env python
"""Time and space that the fault handling adds to training, against a run without it, from one run.

Two trainers train the same network on the same synthetic batches for ``--epochs`` epochs, each
with the epoch checkpoint (``checkpoint.pt`` every epoch) and the best-model saving it had before:

* ``without``: a plain shuffled DataLoader, no NaN check, no signal handling, only the last checkpoint;
* ``with``: the training loader behind ignite's ``ReproducibleBatchSampler`` and the epoch's
  shuffle state (mid-epoch resume), the NaN/Inf check after every iteration, SIGTERM/SIGINT
  handling, the run lock, the run identity in the checkpoint, and ``checkpoint.previous.pt``.

The two are interleaved (``--repeats`` times each, in turn) so that drift in the machine's speed
hits both alike; the ratio of the medians is printed. Then the space: the bytes of each file in
``models/`` and the disk blocks they take (the previous checkpoint is a hard link to the replaced
file, so it keeps old blocks alive but writes none), and the time to write one checkpoint of the
network (a signal stop writes one).

    python scripts/bench_fault_overhead.py                                    # SmallCNN 28², batch 32
    python scripts/bench_fault_overhead.py --network resnet50 --size 64 --batch 8 --sets 4 --classes 14
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.data import DataLoader, Dataset

from l2v_monai.engine.checkpoints import (
    EpochCheckpointSaver,
    RNGState,
    RunIdentity,
    prepare_checkpoint_dir,
)
from l2v_monai.engine.epoch_position import EpochPosition, resumable_loader
from l2v_monai.engine.nonfinite import StopOnNonFiniteLoss
from l2v_monai.engine.stop_signals import StopOnSignal
from l2v_monai.engine.trainer import LearningToVoteTrainer
from l2v_monai.bundle_scripts.networks import NETWORKS
from l2v_monai.strategies import attach_targets, build_strategy


def make_items(n: int, size: int, sets: int, classes: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, sets, classes, generator=g) > 0.7).float()
    images = torch.randn(n, 1, size, size, generator=g)
    return [{"image": images[i], "labels": labels[i]} for i in range(n)]


def run(args: argparse.Namespace, items: list[dict], folder: Path, with_faults: bool) -> float:
    """Seconds of ``trainer.run()`` for ``args.epochs`` epochs, checkpoints included."""
    torch.manual_seed(0)
    network = NETWORKS[args.network](num_outputs=args.classes, in_channels=1)
    strategy = build_strategy("l2v", num_sets=args.sets, num_outputs=args.classes, feature_dim=network.num_features,
                              label_sets=[f"set{m}" for m in range(args.sets)])
    optimizer = torch.optim.Adam(strategy.param_groups(network, 1e-4), lr=1e-4)
    items = attach_targets(items, strategy)  # the anchored vote's anchor labels
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(Dataset(items), batch_size=args.batch, shuffle=True, num_workers=0, generator=generator)
    if with_faults:
        prepare_checkpoint_dir(folder / "models", overwrite=True)
        loader = resumable_loader(loader)
    trainer = LearningToVoteTrainer(device="cpu", max_epochs=args.epochs, train_data_loader=loader, network=network,
                                    optimizer=optimizer, strategy=strategy, decollate=False)
    save_dict: dict = {"trainer": trainer, "network": network, "optimizer": optimizer, "strategy": strategy,
                       "rng": RNGState(generators={"train_shuffle": generator}, modules=[strategy])}
    if with_faults:
        StopOnNonFiniteLoss().attach(trainer)
        position = EpochPosition(trainer, generator)
        save_dict["epoch_position"] = position
        save_dict["run_identity"] = RunIdentity({"network": type(network), "label_sets": [f"set{m}" for m in range(args.sets)],
                                                 "label_strategy": "l2v"})
    saver = EpochCheckpointSaver(folder / "models", save_dict, keep_previous=with_faults)
    saver.attach(trainer)
    if with_faults:
        position.attach(trainer)
        StopOnSignal(saver).attach(trainer)
    start = time.perf_counter()
    trainer.run()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--network", default="small_cnn", choices=sorted(NETWORKS))
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--items", type=int, default=640)
    parser.add_argument("--sets", type=int, default=5)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    items = make_items(args.items, args.size, args.sets, args.classes)
    steps = args.epochs * -(-args.items // args.batch)
    times: dict[bool, list[float]] = {False: [], True: []}
    root = Path(tempfile.mkdtemp(prefix="bench_fault_overhead_"))
    try:
        run(args, items, root / "warmup", False)
        for r in range(args.repeats):
            # ABBA order: whichever runs second in a pair (warmer caches, other jobs' load) alternates.
            for with_faults in ((False, True) if r % 2 == 0 else (True, False)):
                folder = root / f"{'with' if with_faults else 'without'}{r}"
                times[with_faults].append(run(args, items, folder, with_faults))
        base, added = statistics.median(times[False]), statistics.median(times[True])
        print(f"{args.network} {args.size}², batch {args.batch}, M={args.sets}, {args.classes} outputs, "
              f"{args.epochs} epochs × {steps // args.epochs} steps, checkpoint every epoch, {args.repeats} repeats")
        print(f"time   without: {base:.2f} s ({1000 * base / steps:.1f} ms/step)   with: {added:.2f} s   "
              f"ratio {added / base:.3f}×")

        def usage(models: Path) -> tuple[int, int, dict[str, int]]:
            files = {p.name: p.stat().st_size for p in sorted(models.iterdir())}
            blocks = sum(p.stat().st_blocks * 512 for p in models.iterdir())
            return sum(files.values()), blocks, files

        base_bytes, base_blocks, base_files = usage(root / "without0" / "models")
        add_bytes, add_blocks, add_files = usage(root / "with0" / "models")
        print(f"space  without: {base_bytes} bytes {base_files}   with: {add_bytes} bytes {add_files}   "
              f"ratio {add_bytes / base_bytes:.3f}× (disk blocks {add_blocks / base_blocks:.3f}×)")
        per_step = handler_seconds_per_step()
        print(f"per-step handlers alone (NaN/Inf check + signal check, {per_step * 1e6:.1f} µs per step): "
              f"{1 + per_step / (base / steps):.4f}× a step of this run")
        checkpoint = root / "with0" / "models" / "checkpoint.pt"
        start = time.perf_counter()
        EpochCheckpointSaver(root / "write", {"state": _Loaded(checkpoint)}).save()
        print(f"one checkpoint write ({checkpoint.stat().st_size} bytes, atomic, fsync'd): "
              f"{time.perf_counter() - start:.3f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def handler_seconds_per_step(calls: int = 20000) -> float:
    """Seconds that the two per-iteration handlers take per call, on a trainer-like output (5 loss terms)."""
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    engine.state.output = {name: torch.tensor(0.5) for name in
                           ("loss", "model_loss", "probe_loss", "agreement_loss", "vote_loss")}
    engine.state.iteration, engine.state.epoch, engine.state.epoch_length = 1, 1, 10**9
    guard, stop = StopOnNonFiniteLoss(), StopOnSignal(checkpoint_saver=None)
    start = time.perf_counter()
    for _ in range(calls):
        guard(engine)
        stop.after_iteration(engine)
    return (time.perf_counter() - start) / calls


class _Loaded:
    """A saved checkpoint as a ``state_dict`` owner, to time one more write of the same bytes."""

    def __init__(self, path: Path) -> None:
        self.state = torch.load(path, map_location="cpu", weights_only=True)

    def state_dict(self) -> dict:
        return self.state


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
