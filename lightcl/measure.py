"""Measuring a real step: FLOPs with FlopCounterMode, peak memory with MemTracker.

These are the references the engine is checked against; nothing here feeds a
prediction.

* :class:`FrozenSafeMemTracker` is PyTorch's MemTracker with one change: it
  does not try to hook parameters that do not require grad (MemTracker raises
  on them), which changes nothing in its accounting.
* :func:`measure_flops` counts the forward and the backward of one step apart.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

MEMTRACKER_CATEGORIES = {"Parameter": "parameters", "Buffer": "model_buffers",
                         "Gradient": "gradients", "Activation": "activations",
                         "Temp": "temporaries", "Optstate": "optimizer_state", "Other": "inputs"}


def _memtracker_class() -> type:
    from torch.distributed._tools.mem_tracker import MemTracker

    class _Noop:
        def remove(self) -> None:
            pass

    class FrozenSafeMemTracker(MemTracker):
        """MemTracker that leaves frozen parameters alone instead of failing on them."""

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):  # noqa: ANN001, ANN202
            for p in module.parameters():
                if not p.requires_grad:
                    self._param_to_grad_hook_handles.setdefault(p, (_Noop(), _Noop()))
            return super()._track_module_params_and_buffers(module, install_grad_hooks)

    return FrozenSafeMemTracker


@dataclass
class MemoryReading:
    peak_bytes: int
    breakdown_bytes: dict[str, int]


def memtracker_peak(model: nn.Module, optimizer: torch.optim.Optimizer,
                    step: Callable[[], object], externals: tuple = (),
                    iterations: int = 2) -> MemoryReading:
    """Peak of ``iterations`` steps (zero_grad, step(), optimizer.step()) under MemTracker.

    ``step`` runs forward and backward.  The second iteration is the one that
    matters (optimizer state exists from the first step on); MemTracker's peak
    covers both.
    """
    tracker = _memtracker_class()()
    tracker.track_external(model, optimizer, *externals)
    with tracker:
        for i in range(iterations):
            optimizer.zero_grad()
            step()
            optimizer.step()
            if i == 0:
                tracker.reset_mod_stats()
    snap = next(iter(tracker.get_tracker_snapshot("peak").values()))
    breakdown = {MEMTRACKER_CATEGORIES.get(getattr(k, "value", k), str(k)): int(v)
                 for k, v in snap.items() if getattr(k, "value", k) != "Total"}
    return MemoryReading(int(snap["Total"]), breakdown)


@dataclass
class FlopReading:
    forward_flops: int
    backward_flops: int


def measure_flops(run: Callable[[Callable[[], None]], object]) -> FlopReading:
    """FLOPs of one step, split at its backward call.

    ``run(mark)`` executes the step and calls ``mark()`` right before its
    ``backward()``; everything counted before the mark is forward.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    forward = [0]

    def mark() -> None:
        forward[0] = counter.get_total_flops()

    with counter:
        run(mark)
    total = counter.get_total_flops()
    return FlopReading(forward[0], total - forward[0])


@contextlib.contextmanager
def fake_cpu():
    """FakeTensorMode on the CPU device: real shapes and dtypes, no data, fast."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), torch.device("cpu"):
        yield
