"""Seconds a CPU step spends faulting in the pages of its large tensors.

glibc's malloc serves a request of ``MMAP_THRESHOLD_BYTES`` or more with a fresh
``mmap`` and returns it with ``munmap`` when freed (the threshold adapts to freed
blocks, up to 32 MiB on 64-bit Linux, and stays there in a training loop), and
PyTorch's CPU allocator keeps no cache.  So every tensor of 32 MiB or more that a
step makes is new memory whose first write faults in each page: on this project's
2-core machine an add writing a fresh 64 MiB output ran at 5.8 GB/s, into an existing
one at 35 GB/s.  Below the threshold the heap reuses its pages.

The term is ``bytes / rates['alloc'].per_s`` for each allocation at or above the
threshold, forward outputs and the gradients backward makes (an input-sized gradient
per input that needs one; a pass-through add hands its gradient on).  Whether an
allocation reaches the threshold depends on the batch, so the term is not affine:
each allocation's bytes are kept as a line in (1, batch, replay) and summed where they
reach it, one matrix product per evaluation.  Mammoth's EWC penalty gradients over the
flattened parameters (45 MB per op for a ResNet-18) and a batch of 128 32x32 maps of
64 channels (32 MiB) are where it shows.
"""
from __future__ import annotations

import bisect
import itertools

import numpy as np

from costmodel.memory import graph
from costmodel.timing import PASS_THROUGH, base_name
from costmodel.trace.records import StepTrace

MMAP_THRESHOLD_BYTES = 32 << 20
"""glibc's largest dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)."""


def allocation_lines(trace: StepTrace, sel: graph.Selection) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) allocations of the step as (n, 3) byte lines in (1, batch,
    replay), only those that can reach the threshold at some batch."""
    fwd: list[tuple[int, int, int]] = []
    bwd: list[tuple[int, int, int]] = []
    storages = trace.storages

    def keep(into: list, nb: tuple[int, int, int]) -> None:
        if nb[1] > 0 or nb[2] > 0 or nb[0] >= MMAP_THRESHOLD_BYTES:
            into.append(nb)

    for op in trace.ops[trace.prologue_ops:]:
        if op.name.startswith("<"):
            continue
        for sid in op.outputs:
            keep(fwd, storages[sid].nbytes)
        if base_name(op.name) in PASS_THROUGH:
            continue
        for sid, node in zip(op.inputs, op.grad_nodes):
            if graph.needs_grad(sel, node):
                keep(bwd, storages[sid].nbytes)
    empty = np.zeros((0, 3), dtype=np.int64)
    return (np.array(fwd, dtype=np.int64).reshape(-1, 3) if fwd else empty,
            np.array(bwd, dtype=np.int64).reshape(-1, 3) if bwd else empty)


def large_bytes(lines: np.ndarray, batch: int, replay: int) -> int:
    """Bytes of the allocations at or above the threshold at (batch, replay)."""
    if not len(lines):
        return 0
    sizes = lines @ np.array((1, batch, replay), dtype=np.int64)
    return int(sizes[sizes >= MMAP_THRESHOLD_BYTES].sum())


class LargeBytes:
    """:func:`large_bytes` of fixed lines in about a microsecond where no line grows
    with the replay batch (a sweep's millions of points): each line reaches the
    threshold from one batch on, so the lines sorted by that batch and their running
    sums answer any batch with one bisection."""

    def __init__(self, lines: np.ndarray) -> None:
        self.lines = lines
        self.by_replay = bool(len(lines)) and bool(lines[:, 2].any())
        rows = sorted(r for r in ((_first_batch(int(a), int(b)), int(a), int(b))
                                  for a, b, _ in lines) if r[0] is not None)
        self.first = [r[0] for r in rows]
        self.fixed = list(itertools.accumulate((r[1] for r in rows), initial=0))
        self.per_sample = list(itertools.accumulate((r[2] for r in rows), initial=0))

    def __call__(self, batch: int, replay: int = 0) -> int:
        if self.by_replay and replay:
            return large_bytes(self.lines, batch, replay)
        k = bisect.bisect_right(self.first, batch)
        return self.fixed[k] + self.per_sample[k] * batch


def _first_batch(fixed: int, per_sample: int) -> int | None:
    """The smallest batch at which ``fixed + per_sample * batch`` reaches the threshold."""
    if fixed >= MMAP_THRESHOLD_BYTES:
        return 0
    if per_sample <= 0:
        return None
    return -(-(MMAP_THRESHOLD_BYTES - fixed) // per_sample)
