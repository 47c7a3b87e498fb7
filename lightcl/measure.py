"""Measuring a real step: FLOPs with FlopCounterMode, peak memory with MemTracker.

These are the references the engine is checked against; nothing here feeds a
prediction.

* :class:`FrozenSafeMemTracker` is PyTorch's MemTracker with one change: it
  does not try to hook parameters that do not require grad (MemTracker raises
  on them), which changes nothing in its accounting.
* :class:`StorageTracker` measures any step, a module run twice included.
"""
from __future__ import annotations

import contextlib
import weakref
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


@contextlib.contextmanager
def fake_cpu():
    """FakeTensorMode on the CPU device: real shapes and dtypes, no data, fast."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), torch.device("cpu"):
        yield


class StorageTracker:
    """Peak tensor memory of any step, by category: a dispatch mode and weak references.

    Every storage an op produces is counted when it appears and released when
    Python and autograd let go of it (a weak reference's callback), so a module
    called several times in one step (replay forwards, LightCL's stored samples)
    is fine, unlike MemTracker.  Storages that exist before (parameters, the
    optimizer state, stored method state, the batch) are registered with their
    category; new ones take the category of the phase they appear in, and a
    gradient moves to 'gradients' when it is accumulated into a parameter.
    CPU tensors are counted by their exact size (as MemTracker does on the CPU).
    """

    PHASES = {"forward": "activations", "backward": "temporaries", "optimizer": "optimizer_state"}

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
        from torch.utils.weak import WeakIdKeyDictionary

        tracker = self
        self._info: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._refs: list = []
        self.totals: dict[str, int] = {}
        self.current = 0
        self.peak = 0
        self.peak_breakdown: dict[str, int] = {}
        self.phase = "forward"

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        tracker.track(t, tracker.PHASES[tracker.phase])
                tracker._check()
                return out

        self.mode = _Mode()

    def track(self, t: torch.Tensor, category: str) -> None:
        st = t.untyped_storage()
        if st in self._info:
            return
        n = st.nbytes()
        cell = [category, n]
        self._info[st] = cell
        self.totals[category] = self.totals.get(category, 0) + n
        self.current += n

        def release(_: object, cell: list = cell) -> None:
            self.totals[cell[0]] -= cell[1]
            self.current -= cell[1]

        self._refs.append(weakref.ref(st, release))

    def recategorize(self, t: torch.Tensor, category: str) -> None:
        cell = self._info.get(t.untyped_storage())
        if cell is not None and cell[0] != category:
            self.totals[cell[0]] -= cell[1]
            self.totals[category] = self.totals.get(category, 0) + cell[1]
            cell[0] = category

    def _check(self) -> None:
        if self.current > self.peak:
            self.peak = self.current
            self.peak_breakdown = {k: v for k, v in self.totals.items() if v}

    def watch_gradients(self, params) -> list:  # noqa: ANN001
        """Move each gradient to 'gradients' when it lands in ``param.grad``."""
        return [p.register_post_accumulate_grad_hook(lambda p: self.recategorize(p.grad, "gradients"))
                for p in params if p.requires_grad]
