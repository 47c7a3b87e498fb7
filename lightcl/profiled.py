"""The plain run's memory on CPU, read from torch.profiler's memory events.

A TorchDispatchMode tracker (MemTracker, :class:`~lightcl.measure.StorageTracker`)
changes what autograd does (branch gradients are summed out of place under it).
The profiler does not: it records every allocation the CPU allocator makes,
kernel scratch included, on the run as a user runs it (FACTS.md section 5).

Usage::

    with PlainRunProfile() as prof:
        build_things()
        with prof.window("step 2"):
            one_step()
    reading = prof.peak("step 2")      # live bytes, peak inside the window

Live bytes at any moment are the allocator's running total minus what was alive
before profiling began, so anything built inside the profile counts.  An
allocation freed inside the op that made it is kernel scratch: ``op_level``
leaves it out (the level at which costcl's engine counts), ``with_scratch``
keeps it (what the allocator really handed out).  Nothing here feeds a
prediction: it is for benchmarks, tests and ``validate``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.profiler import ProfilerActivity, profile, record_function

_ALLOCATION = torch._C._profiler._EventType.Allocation
_WINDOW_PREFIX = "costcl.window:"


@dataclass(frozen=True)
class PeakReading:
    """Peak live bytes in one window of a profiled run."""

    with_scratch_bytes: int
    """What the CPU allocator really held at its highest point."""
    op_level_bytes: int
    """The same peak with kernel scratch (allocations freed inside their op) left out."""
    end_bytes: int
    """Live bytes when the window closed."""

    @property
    def op_level_mib(self) -> float:
        return self.op_level_bytes / 2**20

    @property
    def with_scratch_mib(self) -> float:
        return self.with_scratch_bytes / 2**20


@dataclass
class _Alloc:
    time_ns: int
    size: int
    """Positive for an allocation, negative for a free."""
    scratch: bool


@dataclass
class PlainRunProfile:
    """A torch.profiler session that reads back live bytes per named window."""

    _prof: profile | None = None
    _events: list[_Alloc] = field(default_factory=list)
    _windows: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __enter__(self) -> PlainRunProfile:
        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._prof is not None
        self._prof.__exit__(*exc)
        if exc[0] is None:
            self._read()

    @staticmethod
    @contextlib.contextmanager
    def window(name: str) -> Iterator[None]:
        """Mark a part of the run whose peak :meth:`peak` can read."""
        with record_function(_WINDOW_PREFIX + name):
            yield

    def _read(self) -> None:
        assert self._prof is not None
        roots = self._prof.profiler.kineto_results.experimental_event_tree()
        raw: list[tuple[int, int, int, int]] = []  # (time, size, outermost op id, ptr)
        windows: dict[str, tuple[int, int]] = {}

        ids = iter(range(1, 1 << 62))

        def walk(event, top: int | None) -> None:  # noqa: ANN001
            if event.tag == _ALLOCATION:
                f = event.extra_fields
                if f.device.type == "cpu":
                    raw.append((event.start_time_ns, int(f.alloc_size), top or 0, int(f.ptr)))
                return
            if event.name.startswith(_WINDOW_PREFIX):  # a marker, not an op: look inside
                windows[event.name[len(_WINDOW_PREFIX):]] = (event.start_time_ns,
                                                             event.end_time_ns)
            elif top is None and event.name.startswith("aten::"):
                top = next(ids)  # the outermost aten op: what it allocates and frees is scratch
            for child in event.children:
                walk(child, top)

        for root in roots:
            walk(root, None)
        raw.sort(key=lambda r: r[0])
        # An allocation freed inside the same top-level op is kernel scratch.
        open_at: dict[int, tuple[int, int]] = {}
        scratch: set[int] = set()
        for k, (_, size, top, ptr) in enumerate(raw):
            if size > 0:
                open_at[ptr] = (k, top)
            elif ptr in open_at:
                k0, top0 = open_at.pop(ptr)
                if top0 == top and top:
                    scratch.update((k0, k))
        self._events = [_Alloc(t, size, k in scratch) for k, (t, size, _, _) in enumerate(raw)]
        self._windows = windows

    def peak(self, name: str | None = None) -> PeakReading:
        """Peak live bytes inside window ``name`` (the whole run when ``None``)."""
        lo, hi = self._windows[name] if name is not None else (-1, 1 << 62)
        live = live_ops = 0
        peak = peak_ops = None
        for e in self._events:
            inside = lo <= e.time_ns <= hi
            live += e.size
            if not e.scratch:
                live_ops += e.size
            if inside:
                peak = live if peak is None else max(peak, live)
                peak_ops = live_ops if peak_ops is None else max(peak_ops, live_ops)
            if e.time_ns > hi:
                break
        end = sum(e.size for e in self._events if e.time_ns <= hi)
        return PeakReading(int(peak or end), int(peak_ops or end), int(end))

    def windows(self) -> list[str]:
        return list(self._windows)


@dataclass
class StepFlops:
    forward_flops: int = 0
    backward_flops: int = 0


class SplitFlopCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """FlopCounterMode's formulas, split by whether autograd's engine is running.

    Ops run inside ``backward()`` count as backward, every other op as forward,
    so the public code's own step (which calls backward itself) can be counted
    without changing it.  The formulas are FlopCounterMode's registry, so the
    total equals FlopCounterMode's.
    """

    def __init__(self) -> None:
        super().__init__()
        from torch.utils.flop_counter import flop_registry
        self._registry = flop_registry
        self.counts = StepFlops()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = self._registry.get(func._overloadpacket)
        if rule is not None:
            n = int(rule(*args, **kwargs, out_val=out))
            if torch._C._current_graph_task_id() != -1:
                self.counts.backward_flops += n
            else:
                self.counts.forward_flops += n
        return out
