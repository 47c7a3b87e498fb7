"""Replay the memory of one training step over the traced facts.

No tensor is created here.  The forward is the traced op sequence: each op adds
its new storages, and a storage leaves when the program has let go of it
(traced liveness) and no running backward node keeps it.  The backward follows
PyTorch's engine on one device: a ready node with the highest sequence number
runs first, AccumulateGrad as soon as it is ready; a node allocates the
gradients of its inputs (:mod:`costmodel.memory.backward_rules`), then lets go
of the gradients it received and of what it saved; gradients that meet at a
branch are summed, in place on real tensors (out of place on fake ones).

Every byte count is a :data:`~costmodel.trace.records.Lin` in the batch size,
and the order of events does not depend on the batch, so the timeline is built
once per set of trainable parameters and evaluated for any batch in
microseconds: each checkpoint is a line, the peak is the highest line at B.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from costmodel.memory import backward_rules
from costmodel.memory.graph import Selection
from costmodel.trace.records import Lin, ModelTrace, StorageKind

CATEGORIES = ("parameters", "model_buffers", "inputs", "activations", "gradients", "temporaries")
PARAMS, BUFFERS, INPUTS, ACTS, GRADS, TEMPS = range(len(CATEGORIES))
_KIND_CATEGORY = {StorageKind.PARAM: PARAMS, StorageKind.BUFFER: BUFFERS,
                  StorageKind.INPUT: INPUTS, StorageKind.ACTIVATION: ACTS}


@dataclass
class Timeline:
    """Memory at every checkpoint, by category, as (fixed, per_sample) arrays.

    ``fixed[k, c] + per_sample[k, c] * batch`` is the bytes of category ``c`` at
    checkpoint ``k``; ``phase[k]`` says where in the step it was taken and
    ``where[k]`` which op or node had just run.
    """

    fixed: np.ndarray
    per_sample: np.ndarray
    phase: list[str]
    where: list[str]
    after_backward: tuple[Lin, ...]
    """Bytes per category once backward has finished (the optimizer's start)."""
    grad_bytes: dict[str, int]
    """Gradient bytes of each trainable parameter, in parameter order."""

    def totals(self, batch: int) -> np.ndarray:
        return (self.fixed + self.per_sample * batch).sum(axis=1)


class _Grad:
    __slots__ = ("nbytes", "refs", "category")

    def __init__(self, nbytes: Lin, category: int) -> None:
        self.nbytes, self.refs, self.category = nbytes, 1, category


class _Memory:
    """Running totals per category and the list of checkpoints."""

    def __init__(self) -> None:
        self.cur = [[0, 0] for _ in CATEGORIES]
        self.points: list[list[int]] = []
        self.phase: list[str] = []
        self.where: list[str] = []

    def add(self, category: int, nbytes: Lin, sign: int = 1) -> None:
        c = self.cur[category]
        c[0] += sign * nbytes[0]
        c[1] += sign * nbytes[1]

    def checkpoint(self, phase: str, where: str) -> None:
        self.points.append([v for c in self.cur for v in c])
        self.phase.append(phase)
        self.where.append(where)


def simulate(trace: ModelTrace, sel: Selection, in_place_accumulation: bool = True) -> Timeline:
    mem = _Memory()
    storages = trace.storages
    for s in storages:
        if s.kind is not StorageKind.ACTIVATION:
            mem.add(_KIND_CATEGORY[s.kind], s.nbytes)
    holders = dict(sel.holders)
    dead: set[int] = set()
    dies_after: dict[int, list[int]] = {}
    for sid, s in enumerate(storages):
        if s.kind is StorageKind.ACTIVATION and s.last_use is not None:
            dies_after.setdefault(s.last_use, []).append(sid)

    # What the loop still references from the previous step (its logits and
    # loss) is only replaced once this step's forward has produced new ones.
    carried = [0, 0]
    for s in storages:
        if s.kind is StorageKind.ACTIVATION and s.last_use is None:
            carried[0] += s.nbytes[0]
            carried[1] += s.nbytes[1]
    mem.add(ACTS, carried)

    # -- forward --------------------------------------------------------------
    for i, op in enumerate(trace.ops):
        for sid in op.outputs:
            mem.add(ACTS, storages[sid].nbytes)
        mem.checkpoint("forward", op.module or op.name)
        for sid in dies_after.get(i, ()):
            dead.add(sid)
            if not holders.get(sid):
                mem.add(ACTS, storages[sid].nbytes, -1)

    mem.add(ACTS, carried, -1)

    # -- backward -------------------------------------------------------------
    nodes = trace.nodes
    active = sel.active
    deps = list(sel.dependencies)
    buffers: dict[int, list[_Grad | None]] = {}

    def release(g: _Grad | None) -> None:
        if g is None:
            return
        g.refs -= 1
        if g.refs == 0:
            mem.add(g.category, g.nbytes, -1)

    def alloc(nbytes: Lin, category: int = TEMPS) -> _Grad:
        mem.add(category, nbytes)
        return _Grad(nbytes, category)

    root = trace.root
    buffers[root] = [alloc(nodes[root].slot_bytes[0])]
    mem.checkpoint("backward", "loss.backward()")
    ready = [(-root, root)]
    grad_bytes: dict[str, int] = {}
    while ready:
        _, n = heapq.heappop(ready)
        node = nodes[n]
        received = buffers.pop(n, [])
        if node.leaf is not None:  # AccumulateGrad: the gradient becomes param.grad
            g = received[0]
            if g.refs == 1 and g.category == TEMPS:
                mem.add(TEMPS, g.nbytes, -1)
                mem.add(GRADS, g.nbytes)
                g.category = GRADS
            else:
                alloc(node.slot_bytes[0], GRADS)
                mem.checkpoint("backward", node.leaf)
                release(g)
            grad_bytes[node.leaf] = node.slot_bytes[0][0]
            continue
        plan = backward_rules.rule(node.name, len(node.edges))
        outputs: list[tuple[tuple[int, int], _Grad]] = []
        allocated = False
        for edge, how in zip(node.edges, plan):
            if edge is None or not active[edge[0]]:
                continue
            target_bytes = nodes[edge[0]].slot_bytes[edge[1]]
            if how == backward_rules.NEW:
                outputs.append((edge, alloc(target_bytes)))
                allocated = True
            else:
                g = received[how] if how < len(received) else None
                if g is None:  # nothing arrived on that slot: PyTorch materialises zeros
                    outputs.append((edge, alloc(target_bytes)))
                    allocated = True
                else:
                    g.refs += 1
                    outputs.append((edge, g))
        if allocated:
            mem.checkpoint("backward", node.name)
        for g in received:
            release(g)
        # validate_outputs: a passed gradient of the wrong size is reduced or cast
        if node.name not in backward_rules.EXPANDS:
            for k, (edge, g) in enumerate(outputs):
                want = nodes[edge[0]].slot_bytes[edge[1]]
                if g.nbytes != want:
                    new = alloc(want)
                    mem.checkpoint("backward", node.name)
                    release(g)
                    outputs[k] = (edge, new)
        for sid in node.saved:
            left = holders.get(sid)
            if left is None:
                continue
            holders[sid] = left - 1
            if left == 1 and sid in dead:
                mem.add(ACTS, storages[sid].nbytes, -1)
        for (t, slot), g in outputs:
            buf = buffers.setdefault(t, [None] * len(nodes[t].slot_bytes))
            old = buf[slot]
            if old is None:
                buf[slot] = g
            elif in_place_accumulation and old.refs == 1:
                release(g)
            elif in_place_accumulation and g.refs == 1:
                release(old)
                buf[slot] = g
            else:
                new = alloc(g.nbytes)
                mem.checkpoint("backward", "accumulate")
                release(old)
                release(g)
                buf[slot] = new
            deps[t] -= 1
            if deps[t] == 0:
                heapq.heappush(ready, (-t, t))
    points = np.array(mem.points, dtype=np.int64).reshape(len(mem.points), len(CATEGORIES), 2)
    ordered = {name: grad_bytes[name] for name in trace.param_sids if name in grad_bytes}
    return Timeline(points[:, :, 0].copy(), points[:, :, 1].copy(), mem.phase, mem.where,
                    tuple(tuple(c) for c in mem.cur), ordered)
