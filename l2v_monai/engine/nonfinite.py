"""A NaN or Inf loss stops training with one error that names the epoch, the iteration and the bad terms.

Ignite's ``TerminateOnNan`` has the idea (check the output after every iteration) but ends the run
quietly, as if it had finished; here the run fails, so no later handler saves the damaged state:
the step that produced the NaN has already updated the weights in memory, but ``checkpoint.pt``
(written at the end of the last good epoch, or at a signal stop) and ``model.pt`` (written after a
validation) are left as they were, and ``--resume True`` continues from them. Under AMP the loss is
checked, not the gradients: inf gradients that the ``GradScaler`` skips leave a finite loss and are
not this error.
"""

from __future__ import annotations

import math

import torch
from ignite.engine import Engine, Events

from l2v_monai.engine.progress import loss_values

__all__ = ["NonFiniteLossError", "StopOnNonFiniteLoss", "non_finite_error"]


class NonFiniteLossError(FloatingPointError):
    """The training loss or one of its terms is NaN or Inf."""


def non_finite_error(engine: Engine, bad: dict[str, str], checkpoint: str = "checkpoint.pt") -> NonFiniteLossError:
    """The error for ``engine``'s current iteration; ``bad`` maps each bad term to what it is (``"nan"``, ``"inf"``)."""
    state = engine.state
    length = state.epoch_length or 0
    in_epoch = (state.iteration - 1) % length + 1 if length else state.iteration
    return NonFiniteLossError(
        f"non-finite training loss at epoch {state.epoch}, iteration {in_epoch}/{length} (global iteration "
        f"{state.iteration}): " + ", ".join(f"{name} = {value}" for name, value in bad.items())
        + f". The step was not saved: {checkpoint} and model.pt are the last good ones. Find the cause "
        "(learning rate, an input image, a label set), then continue from there with --resume True."
    )


class StopOnNonFiniteLoss:
    """Raise :class:`NonFiniteLossError` after an iteration whose ``loss`` or ``*_loss`` term is not finite.

    Put it first in the trainer's handlers, so that no handler of the same iteration (a signal
    stop's checkpoint among them) sees the bad state. One device-to-host read per iteration (all the
    terms stacked), measured in docs/benchmarks.md.

    Args:
        checkpoint: the checkpoint a resume would start from, named in the error.
    """

    def __init__(self, checkpoint: str = "checkpoint.pt") -> None:
        self.checkpoint = checkpoint

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        terms = loss_values(engine.state.output)
        if not terms:
            return
        device = next((v.device for v in terms.values() if isinstance(v, torch.Tensor)), None)
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device) for v in terms.values()])
        if bool(torch.isfinite(values).all()):
            return
        bad = {f"train_{name}": str(float(v)) for name, v in terms.items() if not math.isfinite(float(v))}
        # Name the network's output first when it is the cause (checked only on failure, so free).
        pred = engine.state.output.get("pred") if isinstance(engine.state.output, dict) else None
        if isinstance(pred, torch.Tensor) and not bool(torch.isfinite(pred.detach()).all()):
            bad = {"pred (the network's output)": "nan/inf", **bad}
        raise non_finite_error(engine, bad, self.checkpoint)
