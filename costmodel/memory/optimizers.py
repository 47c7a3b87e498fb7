"""Optimizer state and the temporaries of ``optimizer.step()``, one entry each.

State is what the optimizer keeps per trainable parameter from the second step
on.  Temporaries are what ``step()`` allocates and frees on the way; they only
matter when the step is the peak, which happens when few activations are kept
(a frozen trunk, a small batch).

Two code paths differ, because PyTorch picks them by device:

* CPU: the per-parameter ("single tensor") loop.  Adam computes
  ``denom = (exp_avg_sq.sqrt() / c).add_(eps)``: the square root and the
  quotient are alive together, while the previous parameter's ``denom`` has not
  been replaced yet.
* CUDA: the ``foreach`` path.  Adam's ``_foreach_sqrt`` makes one temporary per
  trainable parameter, all alive at once.

Plain SGD and SGD with momentum update in place on both paths.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from costmodel.errors import suggest

STEP_COUNTER_BYTES = 4
"""Adam's per-parameter ``step`` is a float32 scalar tensor (on the CPU)."""


def _none(sizes: Sequence[int], device: str) -> int:
    return 0


def _adam(sizes: Sequence[int], device: str) -> int:
    if not sizes:
        return 0
    if device == "cuda":
        return sum(sizes)
    prev = [0, *sizes[:-1]]
    return max(p + 2 * n for p, n in zip(prev, sizes))


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    state_tensors: int
    """Parameter-sized state tensors per trainable parameter."""
    scalar_state_bytes: int
    """Bytes of per-parameter scalar state kept on the same device as the weights."""
    step_temporaries: Callable[[Sequence[int], str], int]
    """Peak bytes allocated inside step(), given trainable parameter sizes in bytes."""
    description: str

    def state_bytes(self, sizes: Sequence[int], device: str) -> int:
        scalars = self.scalar_state_bytes * len(sizes) if device != "cuda" else 0
        return self.state_tensors * sum(sizes) + scalars


OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec("sgd", 0, 0, _none, "plain SGD: no state, in-place update"),
        OptimizerSpec("sgd-momentum", 1, 0, _none, "SGD with momentum: one buffer per weight"),
        OptimizerSpec("adam", 2, STEP_COUNTER_BYTES, _adam, "Adam: two moments per weight"),
        OptimizerSpec("adamw", 2, STEP_COUNTER_BYTES, _adam, "AdamW: Adam with decoupled decay"),
    )
}


def optimizer(name: str) -> OptimizerSpec:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise suggest(name, OPTIMIZERS, "optimizer") from None
