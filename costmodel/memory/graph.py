"""Which part of the traced graph a configuration runs.

The trace holds the graph with every parameter trainable.  With some frozen,
PyTorch never builds the nodes that lead to no trainable parameter: they do no
backward and keep nothing alive.  A node runs iff one of its edges reaches an
AccumulateGrad of a trainable parameter, which is one pass in creation order
because an edge always points to an older node (or to a leaf).
"""
from __future__ import annotations

from dataclasses import dataclass

from collections.abc import Sequence

from costmodel.trace.records import Lin, NodeFact, StepTrace, StorageKind


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
    kept_until: dict[int | None, tuple[int, ...]] = None  # type: ignore[assignment]
    """Saved storages of graphs no backward runs, by the op after which the last
    output reaching them is let go (``None``: never in the step); one entry per
    node that saved it, as in ``holders``."""


def _active(trace: StepTrace, trainable: frozenset[str]) -> list[bool]:
    nodes = trace.nodes
    active = [False] * len(nodes)
    for i, n in enumerate(nodes):
        if n.leaf is not None:
            active[i] = n.leaf in trainable
    for i, n in enumerate(nodes):
        if n.leaf is None:
            active[i] = any(e is not None and active[e[0]] for e in n.edges)
    return active


def select(trace: StepTrace, trainable: frozenset[str],
           kept_trainable: frozenset[str] | None = None) -> Selection:
    """``kept_trainable``: what required grad when graphs no backward runs were built
    (a prologue run before the step's flags were set); default ``trainable``."""
    nodes = trace.nodes
    active = _active(trace, trainable)
    segment_of = _segments(trace)
    deps = [[0] * len(nodes) for _ in trace.segments]
    holders: dict[int, int] = {}
    for i, n in enumerate(nodes):
        if not active[i] or n.leaf is not None or segment_of[i] == -1:
            continue  # (a node no backward reaches: see _kept_graphs)
        seg = deps[segment_of[i]]
        for e in n.edges:
            if e is not None and active[e[0]]:
                seg[e[0]] += 1
        for sid in held(n, active):
            holders[sid] = holders.get(sid, 0) + 1
    kept = _kept_graphs(trace, active if kept_trainable is None else
                        _active(trace, kept_trainable), segment_of)
    for sids in kept.values():
        for sid in sids:
            holders[sid] = holders.get(sid, 0) + 1
    return Selection(trainable, tuple(active), tuple(tuple(d) for d in deps), holders, kept)


def _kept_graphs(trace: StepTrace, active: list[bool],
                 segment_of: list[int]) -> dict[int | None, tuple[int, ...]]:
    """Saved storages of the active nodes no backward reaches, by release point.

    A node of such a graph lives as long as any model output whose graph holds
    it: its release point is the latest of those outputs' last uses.
    """
    release: dict[int, int] = {}
    forever = 1 << 62
    for root in trace.kept_roots:
        last = trace.storages[root.sid].last_use
        until = forever if last is None else last
        stack = [root.node]
        seen: set[int] = set()
        while stack:
            i = stack.pop()
            node = trace.nodes[i]
            if i in seen or node.leaf is not None or segment_of[i] != -1 or not active[i]:
                continue
            seen.add(i)
            release[i] = max(release.get(i, -1), until)
            stack.extend(e[0] for e in node.edges if e is not None)
    out: dict[int | None, list[int]] = {}
    for i, until in release.items():
        out.setdefault(None if until == forever else until, []).extend(held(trace.nodes[i], active))
    return {k: tuple(v) for k, v in out.items()}


def held(node: NodeFact, active: Sequence[bool]) -> tuple[int, ...]:
    """What a running node keeps for backward when ``active`` says which nodes run: a
    guarded tensor only while one of its guard edges needs a gradient (autograd decides
    at forward time; ``addmm`` under a frozen weight keeps no input)."""
    if not node.saved_when:
        return node.saved
    edges = node.edges
    return tuple(sid for sid, when in zip(node.saved, node.saved_when)
                 if when is None or any(e < len(edges) and edges[e] is not None
                                        and active[edges[e][0]] for e in when))


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
        fused = op.macs_by_kind == "rnn" and any(needs_grad(sel, n) for n in op.grad_nodes)
        for i, (sid, node, g) in enumerate(zip(op.inputs, op.grad_nodes, op.grad_flops)):
            if not fused and not needs_grad(sel, node):  # one fused kernel computes them all
                continue
            is_weight = storages[sid].kind is StorageKind.PARAM
            target = g_w if is_weight else g_in
            for k in range(3):
                target[k] += g[k]
            if is_weight and i == 1:  # a convolution's weight: FlopCounterMode's grouped rule
                for k in range(3):
                    excess[k] += op.grouped_excess[k]
    return StepFlopsLin(tuple(fwd), tuple(g_in), tuple(g_w), tuple(excess), tuple(ew))
