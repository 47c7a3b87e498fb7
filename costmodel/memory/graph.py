"""Which part of the traced graph a configuration runs.

The trace holds the graph with every parameter trainable.  With some frozen,
PyTorch never builds the nodes that lead to no trainable parameter: they do no
backward and keep nothing alive.  A node runs iff one of its edges reaches an
AccumulateGrad of a trainable parameter, which is one pass in creation order
because an edge always points to an older node (or to a leaf).
"""
from __future__ import annotations

from dataclasses import dataclass

from costmodel.trace.records import ModelTrace, StorageKind


@dataclass(frozen=True)
class Selection:
    trainable: frozenset[str]
    active: tuple[bool, ...]
    """Per node: does it run in backward?"""
    dependencies: tuple[int, ...]
    """Per node: how many edges from running nodes point at it."""
    holders: dict[int, int]
    """Storage id -> number of running nodes that keep it for backward."""


def select(trace: ModelTrace, trainable: frozenset[str]) -> Selection:
    nodes = trace.nodes
    active = [False] * len(nodes)
    leaves = [i for i, n in enumerate(nodes) if n.leaf is not None]
    for i in leaves:
        active[i] = nodes[i].leaf in trainable
    for i, n in enumerate(nodes):
        if n.leaf is None:
            active[i] = any(e is not None and active[e[0]] for e in n.edges)
    deps = [0] * len(nodes)
    holders: dict[int, int] = {}
    for i, n in enumerate(nodes):
        if not active[i]:
            continue
        for e in n.edges:
            if e is not None and active[e[0]]:
                deps[e[0]] += 1
        for sid in n.saved:
            holders[sid] = holders.get(sid, 0) + 1
    return Selection(trainable, tuple(active), tuple(deps), holders)


def needs_grad(sel: Selection, node: int | None) -> bool:
    return node is not None and sel.active[node]


def flops(trace: ModelTrace, sel: Selection) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Forward, gradient-of-input, gradient-of-weight and grouped-excess FLOPs (each a Lin).

    An input's gradient is "of the weight" when the input is a parameter (or a
    view of one, like the transposed weight a linear layer multiplies by).
    """
    fwd = [0, 0]
    g_in = [0, 0]
    g_w = [0, 0]
    excess = [0, 0]
    storages = trace.storages
    for op in trace.ops:
        if not op.macs_by_kind:
            continue
        fwd[0] += op.forward_flops[0]
        fwd[1] += op.forward_flops[1]
        for i, (sid, node, g) in enumerate(zip(op.inputs, op.grad_nodes, op.grad_flops)):
            if not needs_grad(sel, node):
                continue
            is_weight = storages[sid].kind is StorageKind.PARAM
            target = g_w if is_weight else g_in
            target[0] += g[0]
            target[1] += g[1]
            if is_weight and i == 1:  # a convolution's weight: FlopCounterMode's grouped rule
                excess[0] += op.grouped_excess[0]
                excess[1] += op.grouped_excess[1]
    return tuple(fwd), tuple(g_in), tuple(g_w), tuple(excess)  # type: ignore[return-value]
