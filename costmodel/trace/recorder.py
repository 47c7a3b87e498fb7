"""Trace one forward (model + loss) on the meta device and keep its facts.

What is recorded, and how, matters for every number costcl predicts:

* every aten op, with the storages it created, the module running it and the
  FLOPs of its forward and of each input's gradient (:mod:`costmodel.flops`);
* Python liveness of each storage: a weak reference says after which op the
  program let go of it;
* the autograd graph: every node, its edges, the size of each gradient it
  receives, and which storages it keeps for backward.  Saved tensors are packed
  into placeholders (``saved_tensors_hooks``), so autograd does not extend their
  lives during the trace and the liveness above stays the program's own; the
  placeholders are unpacked once afterwards to learn which node holds what.

All parameters require grad while tracing, so the graph is the full one; a
configuration with frozen layers is a subgraph, chosen later by reachability
(:mod:`costmodel.memory.graph`).  Nothing is executed for real: meta tensors
carry shapes only, so a ResNet-50 at batch 256 costs no memory.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

from costmodel import flops as flop_table
from costmodel.trace.records import (
    ModelTrace,
    ModuleFact,
    NodeFact,
    OpFact,
    StorageFact,
    StorageKind,
    fit,
)

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, tuple]]
"""``step(model, x, y) -> (loss, kept)``: ``kept`` is what the training loop still
references after the forward (the logits, say); it stays alive through backward
and into the next step's forward, as in ``out = model(x); loss = crit(out, y)``."""


def cross_entropy_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The plain supervised step: ``out = model(x); loss = cross_entropy(out, y)``."""
    out = model(x)
    return nn.functional.cross_entropy(out, y), (out,)


@dataclass
class _RawStorage:
    nbytes: int
    kind: StorageKind
    producer: int
    owner: str
    is_float: bool
    last_use: int | None = None


@dataclass
class _RawOp:
    name: str
    module: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    flops: flop_table.OpFlops | None
    elementwise: int
    grad_sources: tuple[object, ...] = ()


@dataclass
class _RawNode:
    name: str
    edges: tuple[tuple[int, int] | None, ...]
    slot_bytes: tuple[int, ...]
    saved: tuple[int, ...]
    leaf: str | None


@dataclass
class _RawTrace:
    ops: list[_RawOp] = field(default_factory=list)
    storages: list[_RawStorage] = field(default_factory=list)
    nodes: list[_RawNode] = field(default_factory=list)
    root: int = 0
    module_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)


class _Placeholder:
    """What autograd keeps instead of a saved tensor during the trace."""

    __slots__ = ("sid", "shape", "dtype")

    def __init__(self, sid: int, shape: torch.Size, dtype: torch.dtype) -> None:
        self.sid, self.shape, self.dtype = sid, shape, dtype


class _Recorder(TorchDispatchMode):
    def __init__(self, module_stack: list[str]) -> None:
        super().__init__()
        self.raw = _RawTrace()
        self._sid: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._refs: list[weakref.ref] = []
        self._modules = module_stack
        self.finished = False
        """Set once the forward has returned: later deaths are the trace's own clean-up."""

    # -- storages ----------------------------------------------------------------
    def sid_of(self, t: torch.Tensor, kind: StorageKind = StorageKind.ACTIVATION,
               owner: str | None = None) -> int:
        st = t.untyped_storage()
        sid = self._sid.get(st)
        if sid is not None:
            return sid
        sid = len(self.raw.storages)
        producer = len(self.raw.ops) if kind is StorageKind.ACTIVATION else -1
        self.raw.storages.append(_RawStorage(
            st.nbytes(), kind, producer, owner if owner is not None else self._module(),
            t.dtype.is_floating_point))
        self._sid[st] = sid
        storages = self.raw.storages
        ops = self.raw.ops

        def died(_: object, sid: int = sid) -> None:
            if not self.finished:
                storages[sid].last_use = len(ops) - 1

        self._refs.append(weakref.ref(st, died))
        return sid

    def _module(self) -> str:
        return self._modules[-1] if self._modules else ""

    # -- ops ---------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_in, _ = tree_flatten((args, kwargs))
        tensors_in = [a for a in flat_in if isinstance(a, torch.Tensor)]
        inputs = tuple(self.sid_of(a) for a in tensors_in)
        sources = tuple(a.grad_fn if a.grad_fn is not None else
                        (("leaf", id(a)) if a.requires_grad else None) for a in tensors_in)
        flat_out, _ = tree_flatten(out)
        known = len(self.raw.storages)
        outputs = []
        for t in flat_out:
            if isinstance(t, torch.Tensor):
                sid = self.sid_of(t)
                if sid >= known and sid not in outputs:
                    outputs.append(sid)
        name = str(func)
        shape_of = lambda a: tuple(a.shape) if isinstance(a, torch.Tensor) else a  # noqa: E731
        out_shapes = [tuple(t.shape) for t in flat_out if isinstance(t, torch.Tensor)]
        fl = flop_table.op_flops(name, tree_map(shape_of, args), out_shapes)
        in_numel = tensors_in[0].numel() if tensors_in else 0
        out_numel = max((t.numel() for t in flat_out if isinstance(t, torch.Tensor)), default=0)
        ew = 0 if fl else flop_table.elementwise_flops(name, in_numel, out_numel)
        self.raw.ops.append(_RawOp(name, self._module(), inputs, tuple(outputs), fl, ew, sources))
        return out


def _walk_graph(root: torch.autograd.graph.Node, unpacked: list[int],
                leaf_names: dict[int, str]) -> tuple[list[_RawNode], dict]:
    """Every node reachable from ``root``, in creation (sequence) order."""
    seen: dict[torch.autograd.graph.Node, None] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen[node] = None
        stack.extend(fn for fn, _ in node.next_functions)
    order = sorted(seen, key=lambda n: n._sequence_nr())
    index = {n: i for i, n in enumerate(order)}
    nodes = []
    for n in order:
        unpacked.clear()
        for attr in dir(n):
            if attr.startswith("_saved_"):
                getattr(n, attr)
        if hasattr(n, "saved_tensors"):  # custom autograd.Function
            try:
                n.saved_tensors  # noqa: B018
            except RuntimeError:
                pass
        leaf = None
        if hasattr(n, "variable"):
            leaf = leaf_names.get(id(n.variable), "<input>")
        edges = tuple(None if fn is None else (index[fn], slot) for fn, slot in n.next_functions)
        slot_bytes = tuple(torch.Size(m.shape).numel() * m.dtype.itemsize
                           for m in n._input_metadata)
        nodes.append(_RawNode(n.name(), edges, slot_bytes, tuple(dict.fromkeys(unpacked)), leaf))
        if leaf is not None and hasattr(n, "variable"):
            index[("leaf", id(n.variable))] = index[n]
    return nodes, index


def _trace_once(model: nn.Module, step: LossFn, input_shape: tuple[int, ...], batch: int,
                dtype: torch.dtype, num_classes: int) -> _RawTrace:
    module_names = {id(m): name for name, m in model.named_modules()}
    module_stack: list[str] = []
    rec = _Recorder(module_stack)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def pre(mod: nn.Module, args: tuple) -> None:
        name = module_names.get(id(mod))
        if name is not None:
            module_stack.append(name)

    def post(mod: nn.Module, args: tuple, out: object) -> None:
        name = module_names.get(id(mod))
        if name is None:
            return
        module_stack.pop()
        if name not in shapes:
            first_in = next((a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)), None)
            first_out = next((a for a in tree_flatten(out)[0] if isinstance(a, torch.Tensor)), None)
            if first_in is not None and first_out is not None:
                shapes[name] = (tuple(first_in.shape), tuple(first_out.shape))

    leaf_names: dict[int, str] = {}
    for name, p in model.named_parameters():
        rec.sid_of(p, StorageKind.PARAM, name)
        leaf_names[id(p)] = name
    for name, b in model.named_buffers():
        rec.sid_of(b, StorageKind.BUFFER, name)
    x = torch.empty((batch, *input_shape), device="meta", dtype=dtype)
    y = torch.zeros(batch, device="meta", dtype=torch.long)
    rec.sid_of(x, StorageKind.INPUT, "<input>")
    rec.sid_of(y, StorageKind.INPUT, "<target>")

    unpacked: list[int] = []

    def pack(t: torch.Tensor) -> _Placeholder:
        return _Placeholder(rec.sid_of(t), t.shape, t.dtype)

    def unpack(p: _Placeholder) -> torch.Tensor:
        unpacked.append(p.sid)
        return torch.empty(p.shape, dtype=p.dtype, device="meta")

    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack), rec:
            loss, kept = step(model, x, y)
    finally:
        rec.finished = True
        h1.remove()
        h2.remove()
    if loss.grad_fn is None:
        raise RuntimeError("the traced step produced no autograd graph")
    raw = rec.raw
    raw.nodes, index = _walk_graph(loss.grad_fn, unpacked, leaf_names)
    raw.root = index[loss.grad_fn]
    for op in raw.ops:  # resolve gradient sources to node indices, dropping the objects
        op.grad_sources = tuple(index.get(src) if src is not None else None
                                for src in op.grad_sources)
    raw.module_shapes = shapes
    del loss, kept
    return raw


def trace_model(model: nn.Module, input_shape: tuple[int, ...], num_classes: int,
                dtype: torch.dtype = torch.float32, step: LossFn = cross_entropy_step,
                batch_sizes: tuple[int, int] = (2, 3)) -> ModelTrace:
    """Trace ``step(model, x, y)`` on meta tensors at two batch sizes.

    ``model`` must live on the meta device.  Its parameters' ``requires_grad``
    flags are set for the trace and restored afterwards.
    """
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        b1, b2 = batch_sizes
        r1 = _trace_once(model, step, input_shape, b1, dtype, num_classes)
        r2 = _trace_once(model, step, input_shape, b2, dtype, num_classes)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.train(was_training)
    return _combine(model, r1, r2, batch_sizes, input_shape, dtype, num_classes)


def _combine(model: nn.Module, r1: _RawTrace, r2: _RawTrace, batch_sizes: tuple[int, int],
             input_shape: tuple[int, ...], dtype: torch.dtype, num_classes: int) -> ModelTrace:
    b1, b2 = batch_sizes
    if [o.name for o in r1.ops] != [o.name for o in r2.ops] or len(r1.nodes) != len(r2.nodes) \
            or len(r1.storages) != len(r2.storages):
        raise RuntimeError("the model runs different ops at different batch sizes; "
                           "costcl needs a forward whose structure does not depend on the batch")

    def lin(a: int, b: int) -> tuple[int, int]:
        return fit(a, b, b1, b2)

    storages = [
        StorageFact(lin(s1.nbytes, s2.nbytes), s1.kind, s1.producer, s1.last_use, s1.owner,
                    s1.is_float)
        for s1, s2 in zip(r1.storages, r2.storages)
    ]
    ops = []
    for o1, o2 in zip(r1.ops, r2.ops):
        fwd = grads = None
        kind = ""
        if o1.flops is not None:
            fwd = lin(o1.flops.forward, o2.flops.forward)
            grads = tuple(lin(a, b) for a, b in zip(o1.flops.grads, o2.flops.grads))
            grads = grads + ((0, 0),) * (len(o1.inputs) - len(grads))
            kind = o1.flops.kind
        excess = lin(o1.flops.excess, o2.flops.excess) if o1.flops is not None else (0, 0)
        ops.append(OpFact(o1.name, o1.module, o1.inputs, o1.outputs,
                          fwd or (0, 0), grads or ((0, 0),) * len(o1.inputs),
                          lin(o1.elementwise, o2.elementwise), kind,
                          tuple(o1.grad_sources), excess))
    nodes = [
        NodeFact(n1.name, n1.edges, tuple(lin(a, b) for a, b in zip(n1.slot_bytes, n2.slot_bytes)),
                 n1.saved, n1.leaf)
        for n1, n2 in zip(r1.nodes, r2.nodes)
    ]
    param_sids = {s.owner: i for i, s in enumerate(storages) if s.kind is StorageKind.PARAM}
    buffer_sids = {s.owner: i for i, s in enumerate(storages) if s.kind is StorageKind.BUFFER}
    params = dict(model.named_parameters())
    modules = []
    for name, m in model.named_modules():
        own = tuple(f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False))
        modules.append(ModuleFact(name, type(m).__name__, sum(params[p].numel() for p in own), own))
    trace = ModelTrace(
        ops=ops, storages=storages, nodes=nodes, root=r1.root,
        param_sids=param_sids,
        param_numel={n: p.numel() for n, p in params.items()},
        param_bytes={n: p.numel() * p.element_size() for n, p in params.items()},
        buffer_sids=buffer_sids, modules=modules,
        input_sids=tuple(i for i, s in enumerate(storages) if s.kind is StorageKind.INPUT),
        batch_sizes=batch_sizes, dtype=str(dtype).replace("torch.", ""),
        input_shape=tuple(input_shape), num_classes=num_classes,
        module_shapes={
            name: tuple(_lin_shape(a, b, b1, b2) for a, b in zip(shapes, r2.module_shapes[name]))
            for name, shapes in r1.module_shapes.items() if name in r2.module_shapes
        },
    )
    return trace


def _lin_shape(s1: tuple[int, ...], s2: tuple[int, ...], b1: int, b2: int) -> tuple:
    """A shape whose batch-dependent dims are kept as (fixed, per_sample) pairs."""
    if len(s1) != len(s2):
        return tuple((d, 0) for d in s1)
    return tuple(fit(a, b, b1, b2) if a != b else (a, 0) for a, b in zip(s1, s2))
