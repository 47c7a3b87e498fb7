"""Which part of the traced graph a configuration runs.

The trace holds the graph with every parameter trainable.  With some frozen,
PyTorch never builds the nodes that lead to no trainable parameter: they do no
backward and keep nothing alive.  A node runs iff one of its edges reaches an
AccumulateGrad of a trainable parameter, which is one pass in creation order
because an edge always points to an older node (or to a leaf).
"""
from __future__ import annotations

from dataclasses import dataclass

from costmodel.trace.records import Lin, StepTrace, StorageKind


@dataclass(frozen=True)
class Selection:
    trainable: frozenset[str]
    active: tuple[bool, ...]
    """Per node: does it run in backward?"""
    dependencies: tuple[tuple[int, ...], ...]
    """Per backward segment, per node: how many edges from running nodes of
    that segment point at it (AccumulateGrad nodes are shared by segments)."""
    holders: dict[int, int]
    """Storage id -> number of running nodes that keep it for backward."""


def select(trace: StepTrace, trainable: frozenset[str]) -> Selection:
    nodes = trace.nodes
    active = [False] * len(nodes)
    for i, n in enumerate(nodes):
        if n.leaf is not None:
            active[i] = n.leaf in trainable
    for i, n in enumerate(nodes):
        if n.leaf is None:
            active[i] = any(e is not None and active[e[0]] for e in n.edges)
    segment_of = _segments(trace)
    deps = [[0] * len(nodes) for _ in trace.segments]
    holders: dict[int, int] = {}
    for i, n in enumerate(nodes):
        if not active[i] or n.leaf is not None:
            continue
        seg = deps[segment_of[i]]
        for e in n.edges:
            if e is not None and active[e[0]]:
                seg[e[0]] += 1
        for sid in n.saved:
            holders[sid] = holders.get(sid, 0) + 1
    return Selection(trainable, tuple(active), tuple(tuple(d) for d in deps), holders)


def _segments(trace: StepTrace) -> list[int]:
    """Which backward call reaches each (non-leaf) node first."""
    segment_of = [-1] * len(trace.nodes)
    for k, seg in enumerate(trace.segments):
        stack = [seg.root]
        while stack:
            i = stack.pop()
            if segment_of[i] != -1 or trace.nodes[i].leaf is not None:
                continue
            segment_of[i] = k
            stack.extend(e[0] for e in trace.nodes[i].edges if e is not None)
    return segment_of


def needs_grad(sel: Selection, node: int | None) -> bool:
    return node is not None and sel.active[node]


@dataclass(frozen=True)
class StepFlopsLin:
    forward: Lin
    grad_input: Lin
    grad_weight: Lin
    grouped_excess: Lin
    elementwise: Lin


def flops(trace: StepTrace, sel: Selection) -> StepFlopsLin:
    """Forward and backward FLOPs of the step for this selection.

    An input's gradient is "of the weight" when the input is a parameter (or a
    view of one, like the transposed weight a linear layer multiplies by).
    """
    fwd, g_in, g_w, excess, ew = ([0, 0, 0] for _ in range(5))
    storages = trace.storages
    for op in trace.ops:
        for k in range(3):
            ew[k] += op.elementwise_flops[k]
        if not op.macs_by_kind:
            continue
        for k in range(3):
            fwd[k] += op.forward_flops[k]
        for i, (sid, node, g) in enumerate(zip(op.inputs, op.grad_nodes, op.grad_flops)):
            if not needs_grad(sel, node):
                continue
            is_weight = storages[sid].kind is StorageKind.PARAM
            target = g_w if is_weight else g_in
            for k in range(3):
                target[k] += g[k]
            if is_weight and i == 1:  # a convolution's weight: FlopCounterMode's grouped rule
                for k in range(3):
                    excess[k] += op.grouped_excess[k]
    return StepFlopsLin(tuple(fwd), tuple(g_in), tuple(g_w), tuple(excess), tuple(ew))
