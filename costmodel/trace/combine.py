"""Raw facts of one traced run, and how three of them become one :class:`StepTrace`.

The recorder (:mod:`costmodel.trace.recorder`) fills a :class:`RawTrace` per
batch size it traces; :func:`combine` checks that the runs did the same thing and
turns every count that moved with the batch into a :data:`~costmodel.trace.records.Lin`.
Shape arithmetic only: nothing here runs a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from costmodel import flops as flop_table
from costmodel.trace.records import (
    KeptRoot,
    ModuleFact,
    NodeFact,
    OpFact,
    Segment,
    StepTrace,
    StorageFact,
    StorageKind,
    fit,
)

ROOT = "<model>"
"""Name of the trained model itself (functional ops in its own forward)."""


@dataclass
class RawStorage:
    nbytes: int
    kind: StorageKind
    producer: int
    owner: str
    is_float: bool
    last_use: int | None = None


@dataclass
class RawOp:
    name: str
    module: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    flops: flop_table.OpFlops | None
    elementwise: int
    grad_sources: tuple[object, ...] = ()
    numel_in: int = 0
    numel_out: int = 0
    kernel: str = ""


@dataclass
class RawNode:
    name: str
    edges: tuple[tuple[int, int] | None, ...]
    slot_bytes: tuple[int, ...]
    saved: tuple[int, ...]
    leaf: str | None
    saved_when: tuple[tuple[int, ...] | None, ...] = ()
    kernel: str = ""


@dataclass
class RawTrace:
    ops: list[RawOp] = field(default_factory=list)
    storages: list[RawStorage] = field(default_factory=list)
    nodes: list[RawNode] = field(default_factory=list)
    segments: list[tuple[int, int]] = field(default_factory=list)
    prologue_ops: int = 0
    zero_grad_at: int | None = None
    outputs: list[tuple[object, int]] = field(default_factory=list)
    """(grad_fn, storage id) of every output of the trained model."""
    module_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    model_calls: int = 0
    installed_grads: list[tuple[int, str, int]] = field(default_factory=list)
    """(backward index, parameter, storage id) of each ``.grad`` the step assigned itself."""
    dropped: list[int] = field(default_factory=list)
    """Storage ids the step leaves for its loop, which lets them go before the next step."""



def combine(model: nn.Module, input_shape: tuple[int, ...], num_classes: int,
            raws: list[RawTrace], b0: int, r0: int) -> StepTrace:
    """One :class:`StepTrace` from raw traces at (b0, r0), (b0+1, r0) and (b0, r0+1):
    every size the batch changes becomes a :data:`Lin`, exact or it raises."""
    r1, r2, r3 = raws
    for other in (r2, r3):
        if [o.name for o in r1.ops] != [o.name for o in other.ops] or \
                len(r1.nodes) != len(other.nodes) or len(r1.storages) != len(other.storages):
            raise RuntimeError("the step runs different ops at different batch sizes; costcl "
                               "needs a step whose structure does not depend on the batch")

    def lin(a: int, b: int, c: int):
        return fit(a, b, c, 1, 1, b0, r0)

    storages = [
        StorageFact(lin(s1.nbytes, s2.nbytes, s3.nbytes), s1.kind, s1.producer, s1.last_use,
                    s1.owner, s1.is_float)
        for s1, s2, s3 in zip(r1.storages, r2.storages, r3.storages)
    ]
    ops = []
    zero = (0, 0, 0)
    for k, (o1, o2, o3) in enumerate(zip(r1.ops, r2.ops, r3.ops)):
        fwd, grads, kind, excess = zero, (zero,) * len(o1.inputs), "", zero
        if k < r1.prologue_ops:  # done before the step: it costs the step no FLOPs
            o1.elementwise = o2.elementwise = o3.elementwise = 0
        elif o1.flops is not None:
            fwd = lin(o1.flops.forward, o2.flops.forward, o3.flops.forward)
            grads = tuple(lin(a, b, c) for a, b, c in
                          zip(o1.flops.grads, o2.flops.grads, o3.flops.grads))
            grads = grads + (zero,) * (len(o1.inputs) - len(grads))
            kind = o1.flops.kind
            excess = lin(o1.flops.excess, o2.flops.excess, o3.flops.excess)
        ops.append(OpFact(o1.name, o1.module, o1.inputs, o1.outputs, fwd, grads,
                          lin(o1.elementwise, o2.elementwise, o3.elementwise), kind,
                          tuple(o1.grad_sources), excess,
                          lin(o1.numel_in, o2.numel_in, o3.numel_in),
                          lin(o1.numel_out, o2.numel_out, o3.numel_out), o1.kernel))
    nodes = [
        NodeFact(n1.name, n1.edges,
                 tuple(lin(a, b, c) for a, b, c in zip(n1.slot_bytes, n2.slot_bytes, n3.slot_bytes)),
                 n1.saved, n1.leaf, n1.saved_when, n1.kernel)
        for n1, n2, n3 in zip(r1.nodes, r2.nodes, r3.nodes)
    ]
    params = dict(model.named_parameters())
    modules = []
    for name, m in model.named_modules():
        own = tuple(f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False))
        modules.append(ModuleFact(name or ROOT, type(m).__name__,
                                  sum(params[p].numel() for p in own), own))
    return StepTrace(
        ops=ops, storages=storages, nodes=nodes,
        segments=[Segment(after, root) for after, root in r1.segments],
        prologue_ops=r1.prologue_ops,
        zero_grad_at=r1.zero_grad_at,
        kept_roots=[KeptRoot(node, sid) for node, sid in dict(r1.outputs).items()],
        installed_grads=list(r1.installed_grads),
        dropped=list(r1.dropped),
        param_sids={s.owner: i for i, s in enumerate(storages) if s.kind is StorageKind.PARAM},
        param_numel={n: p.numel() for n, p in params.items()},
        param_bytes={n: p.numel() * p.element_size() for n, p in params.items()},
        modules=modules,
        dtype=str(next((p.dtype for p in params.values()), torch.float32)).replace("torch.", ""),
        input_shape=tuple(input_shape), num_classes=num_classes,
        model_calls=r1.model_calls,
        module_shapes={
            name: tuple(lin_shape(a, b, c, b0, r0) for a, b, c in
                        zip(shapes, r2.module_shapes[name], r3.module_shapes[name]))
            for name, shapes in r1.module_shapes.items()
            if name in r2.module_shapes and name in r3.module_shapes
        },
    )


def lin_shape(s1: tuple[int, ...], s2: tuple[int, ...], s3: tuple[int, ...], b0: int,
               r0: int) -> tuple:
    """A shape whose dims are :data:`Lin` triples (most are constants)."""
    if not len(s1) == len(s2) == len(s3):
        return tuple((d, 0, 0) for d in s1)
    return tuple(fit(a, b, c, 1, 1, b0, r0) for a, b, c in zip(s1, s2, s3))
