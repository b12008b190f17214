"""Resume in the middle of an epoch at the exact batch: the epoch's sample order, as a checkpointable object.

A run stopped by a signal saves its state after an iteration (:mod:`l2v_monai.engine.stop_signals`).
To continue at the next batch, the resumed run must draw the same shuffle for that epoch and skip
the batches already trained on, without loading them. The training DataLoader draws its epoch's
order from its ``generator`` when the epoch's iterator is made (after ``EPOCH_STARTED``), so
:class:`EpochPosition` keeps the generator's state at ``EPOCH_STARTED`` in the checkpoint and, on
a mid-epoch resume, puts it back and tells ignite's ``ReproducibleBatchSampler`` to start at the
next batch. Ignite's ``DeterministicEngine`` does the same but reseeds every RNG each epoch, forces
cuDNN's deterministic mode and saves NumPy state that ``weights_only=True`` cannot load, so the
trainer stays a plain MONAI workflow and only its batch sampler comes from ignite.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.engine.deterministic import ReproducibleBatchSampler, update_dataloader
from torch.utils.data import DataLoader

__all__ = ["EpochPosition", "resumable_loader"]

logger = logging.getLogger(__name__)


def resumable_loader(loader: DataLoader) -> DataLoader:
    """``loader`` with its batch sampler wrapped in ignite's ``ReproducibleBatchSampler`` (same batches, same order)."""
    if isinstance(loader.batch_sampler, ReproducibleBatchSampler):
        return loader
    if loader.batch_sampler is None:
        raise ValueError("a resumable training loader needs a batch size (DataLoader(batch_size=...)), not batch_size=None")
    return update_dataloader(loader, ReproducibleBatchSampler(loader.batch_sampler))


class EpochPosition:
    """The epoch's order (the shuffle generator at the epoch's start) for resuming mid-epoch at the next batch.

    Attach to the trainer and add to the checkpoint (``checkpoint_objects``). It also calls
    ``set_epoch`` on a sampler that has one (``DistributedSampler``), which MONAI does only when the
    sampler is the loader's own and not inside the reproducible batch sampler.

    Args:
        trainer: the trainer; its ``data_loader`` must come from :func:`resumable_loader`.
        generator: the generator the loader shuffles with (None: the order does not depend on one,
            e.g. a ``DistributedSampler`` seeded by epoch).
    """

    def __init__(self, trainer: Engine, generator: torch.Generator | None = None) -> None:
        loader = getattr(trainer, "data_loader", None)
        batch_sampler = getattr(loader, "batch_sampler", None)
        if not isinstance(batch_sampler, ReproducibleBatchSampler):
            raise TypeError(
                "EpochPosition needs the trainer's data loader from l2v_monai.engine.epoch_position.resumable_loader "
                "(ignite's ReproducibleBatchSampler), to skip the batches an interrupted epoch already trained on"
            )
        self.batch_sampler = batch_sampler
        self.generator = generator
        self.epoch_start: torch.Tensor | None = generator.get_state() if generator is not None else None
        self._resumed: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)

    def epoch_started(self, engine: Engine) -> None:
        sampler = self.batch_sampler.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(engine.state.epoch)
        length = engine.state.epoch_length
        done = engine.state.iteration % length if length else 0
        if done:
            # A mid-epoch resume: the same order as when the epoch first started, from the next batch.
            if self.generator is not None and self._resumed is not None:
                self.generator.set_state(self._resumed.cpu())
            self.batch_sampler.start_iteration = done
            logger.info("resuming epoch %d at batch %d of %d", engine.state.epoch, done + 1, length)
        self._resumed = None
        if self.generator is not None:
            self.epoch_start = self.generator.get_state()

    def state_dict(self) -> dict[str, Any]:
        return {"shuffle_at_epoch_start": self.epoch_start} if self.epoch_start is not None else {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._resumed = state_dict.get("shuffle_at_epoch_start")
