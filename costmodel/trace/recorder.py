"""Trace one training step's forward on the meta device and keep its facts.

What is recorded, and how, matters for every number costcl predicts:

* every aten op, with the storages it created, the module running it and the
  FLOPs of its forward and of each input's gradient (:mod:`costmodel.flops`);
* Python liveness of each storage: a weak reference says after which op the
  program let go of it;
* the autograd graph: every node, its edges, the size of each gradient it
  receives, and which storages it keeps for backward.  Saved tensors are packed
  into placeholders (``saved_tensors_hooks``), so autograd does not extend their
  lives during the trace and the liveness above stays the program's own; the
  placeholders are unpacked once afterwards to learn which node holds what;
* where the step calls ``backward()``: the call is recorded, not run;
* graphs the step builds and never back-propagates (a forward run with grad
  enabled whose output is kept, as LightCL's repository does at a task's start
  and in its evaluation): what they saved stays alive while their output does;
* where a method's ``prepare`` (work before the step) ends.

All parameters of the trained model require grad while tracing, so the graph is
the full one; a configuration with frozen layers is a subgraph chosen later by
reachability (:mod:`costmodel.memory.graph`).  Nothing is computed for real:
meta tensors carry shapes only, so a ResNet-50 at batch 256 costs no memory.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from costmodel.errors import CostclError
from costmodel import flops as flop_table
from costmodel.trace import attention, kernel_tags, meta_outputs, recurrent, saved_guards
from costmodel.trace.combine import ROOT, RawNode, RawOp, RawStorage, RawTrace, combine
from costmodel.trace.records import RNN_LAYER_OP, StepTrace, StorageKind, at


class BackwardHook:
    """What a traced step calls instead of ``loss.backward()`` (and to mark its prologue)."""

    def __init__(self, on_backward: Callable[[torch.Tensor], None],
                 on_prologue: Callable[[], None] = lambda: None,
                 on_zero_grad: Callable[[], None] = lambda: None,
                 on_grads_set: Callable[[], None] = lambda: None) -> None:
        self._on_backward, self._on_prologue = on_backward, on_prologue
        self._on_zero_grad = on_zero_grad
        self._on_grads_set = on_grads_set

    def __call__(self, loss: torch.Tensor) -> None:
        self._on_grads_set()  # gradients the step assigned itself, before this backward
        self._on_backward(loss)

    def prologue_done(self) -> None:
        """Everything traced so far ran before the step (no FLOPs, never carried)."""
        self._on_prologue()

    def zero_grad(self) -> None:
        """The step lets go of the previous step's gradients here (not before it)."""
        self._on_zero_grad()

STEP = "<step>"
"""Ops outside any module: the loss, the replay sampling."""
BACKWARD_MARK = "<backward>"
"""A no-op the trace inserts where the step calls ``backward()``."""


@dataclass
class TraceSetup:
    """One step, ready to run on meta tensors.

    ``run()`` executes the step and calls the backward hook it was built with
    wherever a real step calls ``loss.backward()``.  ``externals`` are the
    tensors that exist before the step (inputs, replay buffer, method state),
    each with the category it is reported in; the trained model's parameters
    and buffers are found on their own.
    """

    model: nn.Module
    run: Callable[[], object]
    externals: list[tuple[str, StorageKind, torch.Tensor]]
    input_shape: tuple[int, ...]
    num_classes: int
    left: Callable[[], list[torch.Tensor]] = lambda: []
    """After ``run()``: what the step leaves for its loop that the loop lets go before
    the next step (``ctx.keep`` in costcl's trainer)."""
    attention: str = "math"
    """The attention kernels traced (:func:`~costmodel.trace.attention.kernel_family`)."""
    recurrent: str = "unrolled"
    """The LSTM kernels traced (:func:`~costmodel.trace.recurrent.kernel_family`)."""


SetupFactory = Callable[[int, int, BackwardHook], TraceSetup]


class _Placeholder:
    """What autograd keeps instead of a saved tensor during the trace."""

    __slots__ = ("sid", "shape", "stride", "dtype")

    def __init__(self, sid: int, shape: torch.Size, stride: tuple[int, ...],
                 dtype: torch.dtype) -> None:
        self.sid, self.shape, self.stride, self.dtype = sid, shape, stride, dtype


class _Recorder(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """No: a trace is never compiled.  Left at True, torch wraps ``__torch_dispatch__``
        in ``torch._dynamo.disable``, whose first call imports torch._dynamo (6 s on
        this machine's 2 cores, half a cold estimate) and whose every call costs a frame
        callback swap."""
        return False

    def __init__(self, module_stack: list[str]) -> None:
        super().__init__()
        self.raw = RawTrace()
        self._sid: dict[int, int] = {}
        """A live storage's address (``_cdata``) -> its index; dropped when it dies
        (a plain dict: torch's WeakIdKeyDictionary made a weak reference per lookup)."""
        self._refs: list[weakref.ref] = []
        self._modules = module_stack
        self.finished = False
        """Set once the step has returned: later deaths are the trace's own clean-up."""

    def sid_of(self, t: torch.Tensor, kind: StorageKind = StorageKind.ACTIVATION,
               owner: str | None = None) -> int:
        st = t.untyped_storage()
        address = st._cdata
        sid = self._sid.get(address)
        if sid is not None:
            return sid
        sid = len(self.raw.storages)
        producer = len(self.raw.ops) if kind is StorageKind.ACTIVATION else -1
        self.raw.storages.append(RawStorage(
            st.nbytes(), kind, producer, owner if owner is not None else self._module(),
            t.dtype.is_floating_point))
        self._sid[address] = sid
        storages, ops, sids = self.raw.storages, self.raw.ops, self._sid

        def died(_: object, sid: int = sid) -> None:
            if sids.get(address) == sid:
                del sids[address]
            if not self.finished:
                storages[sid].last_use = len(ops) - 1

        self._refs.append(weakref.ref(st, died))
        return sid

    def _module(self) -> str:
        return self._modules[-1] if self._modules else STEP

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        flat_args = meta_outputs.leaves(args, kwargs)
        out = meta_outputs.run(func, args, kwargs, flat_args)
        if func is _RNN_LAYER:  # the workspace the CPU kernel allocates (meta's is empty)
            out = recurrent.layer_outputs(args, out)
        tensors_in = [a for a in flat_args if isinstance(a, torch.Tensor)]
        inputs = tuple(self.sid_of(a) for a in tensors_in)
        sources = tuple(a.grad_fn if a.grad_fn is not None else
                        (("leaf", id(a)) if a.requires_grad else None) for a in tensors_in)
        tensors_out = [t for t in meta_outputs.flat(out, []) if isinstance(t, torch.Tensor)]
        known = len(self.raw.storages)
        outputs: list[int] = []
        for t in tensors_out:
            sid = self.sid_of(t)
            if sid >= known and sid not in outputs:
                outputs.append(sid)
        name = _OP_NAMES.get(func) or _OP_NAMES.setdefault(func, str(func))
        fl = flop_table.op_flops(name, meta_outputs.shapes(args),
                                 [tuple(t.shape) for t in tensors_out]) \
            if name in flop_table.FORMULAS else None
        in_numel = tensors_in[0].numel() if tensors_in else 0
        out_numel = max((t.numel() for t in tensors_out), default=0)
        ew = 0 if fl else flop_table.elementwise_flops(name, in_numel, out_numel)
        kernel = kernel_tags.convolution(args) if func is _CONVOLUTION else ""
        self.raw.ops.append(RawOp(name, self._module(), inputs, tuple(outputs), fl, ew, sources,
                                   in_numel, out_numel, kernel))
        return out


def _walk_graph(roots: list[torch.autograd.graph.Node], unpacked: list[int],
                leaf_names: dict[int, str]) -> tuple[list[RawNode], dict]:
    """Every node reachable from the roots, in creation (sequence) order."""
    seen: dict[torch.autograd.graph.Node, None] = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen[node] = None
        stack.extend(fn for fn, _ in node.next_functions)
    order = sorted(seen, key=lambda n: n._sequence_nr())
    index: dict = {n: i for i, n in enumerate(order)}
    nodes = []
    for n in order:
        name = n.name()
        when: dict[int, tuple[int, ...] | None] = {}  # saved storage -> its guard edges
        saved, custom = _saved_attributes(type(n))
        for attr in saved:
            unpacked.clear()
            getattr(n, attr)
            _merge_guard(when, unpacked, saved_guards.saved_when(name, attr))
        if custom:  # a custom autograd.Function
            unpacked.clear()
            try:
                n.saved_tensors  # noqa: B018
            except RuntimeError:
                pass
            _merge_guard(when, unpacked, None)
        leaf = None
        if hasattr(n, "variable"):
            leaf = leaf_names.get(id(n.variable), "<leaf>")
            index[("leaf", id(n.variable))] = index[n]
        edges = tuple(None if fn is None else (index[fn], slot) for fn, slot in n.next_functions)
        slot_bytes = tuple(torch.Size(m.shape).numel() * m.dtype.itemsize for m in n._input_metadata)
        nodes.append(RawNode(name, edges, slot_bytes, tuple(when), leaf, tuple(when.values()),
                             kernel_tags.node(n, name)))
    return nodes, index


_RNN_LAYER = torch.ops.aten.mkldnn_rnn_layer.default
_CONVOLUTION = torch.ops.aten.convolution.default
_OP_NAMES: dict = {}
"""An op overload -> ``str(op)`` (a Python call per op otherwise)."""
_SAVED: dict[type, tuple[tuple[str, ...], bool]] = {}


def _saved_attributes(node_type: type) -> tuple[tuple[str, ...], bool]:
    """A node class's ``_saved_*`` attributes, and whether it is a custom Function's
    (``saved_tensors``): the same for every node of the class, and ``dir`` is slow."""
    known = _SAVED.get(node_type)
    if known is None:
        names = dir(node_type)
        known = _SAVED[node_type] = (tuple(a for a in names if a.startswith("_saved_")),
                                     "saved_tensors" in names)
    return known


def _merge_guard(when: dict[int, tuple[int, ...] | None], sids: list[int],
                 edges: tuple[int, ...] | None) -> None:
    """A storage saved under several names is kept if any of them keeps it."""
    for sid in sids:
        if sid not in when:
            when[sid] = edges
        elif when[sid] is not None:
            when[sid] = None if edges is None else tuple(sorted({*when[sid], *edges}))


def _trace_once(factory: SetupFactory, batch: int, replay: int,
                forward_only: bool = False) -> tuple[RawTrace, TraceSetup]:
    roots: list[tuple[int, torch.Tensor]] = []
    rec_box: list[_Recorder] = []

    def backward(loss: torch.Tensor) -> None:
        if loss.grad_fn is None:
            raise RuntimeError("backward() on a tensor with no graph")
        ops = rec_box[0].raw.ops
        roots.append((len(ops), loss))
        # A marker op: what the program lets go of after backward() and before its
        # next op dies after the backward, not before it.
        ops.append(RawOp(BACKWARD_MARK, STEP, (), (), None, 0))

    def prologue_done() -> None:
        raw = rec_box[0].raw
        raw.prologue_ops, raw.model_calls = len(raw.ops), 0

    def zero_grad() -> None:
        rec_box[0].raw.zero_grad_at = len(rec_box[0].raw.ops)

    def grads_set() -> None:
        """A ``.grad`` the step assigned (backward never runs in the trace, so any is its own)."""
        raw = rec_box[0].raw
        known = {name for _, name, _ in raw.installed_grads}
        for name, p in setup.model.named_parameters():
            if p.grad is not None and name not in known:
                raw.installed_grads.append((len(roots), name, rec_box[0].sid_of(p.grad)))

    setup = factory(batch, replay, BackwardHook(backward, prologue_done, zero_grad, grads_set))
    model = setup.model
    module_names = {id(m): name or ROOT for name, m in model.named_modules()}
    module_stack: list[str] = []
    rec = _Recorder(module_stack)
    rec_box.append(rec)
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def pre(mod: nn.Module, args: tuple) -> None:
        name = module_names.get(id(mod))
        if name is not None:
            module_stack.append(name)
            if mod is model:
                rec.raw.model_calls += 1

    def post(mod: nn.Module, args: tuple, out: object) -> None:
        name = module_names.get(id(mod))
        if name is None:
            return
        module_stack.pop()
        if mod is model:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                    rec.raw.outputs.append((t.grad_fn, rec.sid_of(t)))
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
    for name, kind, t in setup.externals:
        rec.sid_of(t, kind, name)

    unpacked: list[int] = []

    def pack(t: torch.Tensor) -> _Placeholder:
        return _Placeholder(rec.sid_of(t), t.shape, t.stride(), t.dtype)

    unpacked_as: dict[tuple, torch.Tensor] = {}

    def unpack(p: _Placeholder) -> torch.Tensor:
        """What the graph walk reads (the sid; a shape and layout for a kernel's scratch):
        one empty meta tensor per shape, strides and dtype serves every placeholder."""
        unpacked.append(p.sid)
        key = (p.shape, p.stride, p.dtype)
        t = unpacked_as.get(key)
        if t is None:
            t = unpacked_as[key] = torch.empty_strided(p.shape, p.stride, dtype=p.dtype,
                                                       device="meta")
        return t

    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack), \
                attention.route(setup.attention), recurrent.route(setup.recurrent), rec:
            kept = setup.run()
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError,
            AssertionError) as e:  # a model asserting on its input fails in a layer too
        if not module_stack or isinstance(e, CostclError):
            raise  # outside the model: the method's own code, not the user's model
        layer = module_stack[-1]
        kind = type(model.get_submodule("" if layer == ROOT else layer)).__name__
        first = (str(e).strip().splitlines() or [""])[0].rstrip(".")
        raise LayerFailed(f"fails in layer {layer} ({kind}) at batch {batch}: "
                          f"{type(e).__name__}: {first}") from None
    finally:
        rec.finished = True
        h1.remove()
        h2.remove()
        for p in model.parameters():  # what the step assigned to .grad ends with the trace
            p.grad = None
    if not roots and not forward_only:
        raise RuntimeError("the traced step never called backward()")
    raw = rec.raw
    raw.nodes, index = _walk_graph([loss.grad_fn for _, loss in roots]
                                   + [fn for fn, _ in raw.outputs], unpacked, leaf_names)
    raw.outputs = [(index[fn], sid) for fn, sid in raw.outputs]
    raw.segments = [(after - 1, index[loss.grad_fn]) for after, loss in roots]
    for op in raw.ops:  # resolve gradient sources to node indices, dropping the objects
        op.grad_sources = tuple(index.get(src) if src is not None else None
                                for src in op.grad_sources)
    raw.module_shapes = shapes
    raw.dropped = [rec.sid_of(t) for t in setup.left()]
    del kept, roots
    return raw, setup


class LayerFailed(CostclError):
    """The model's forward raised on meta tensors; the message names the layer."""


def trace_step(factory: SetupFactory, *, replay: bool = False,
               base: tuple[int, int] = (2, 2), forward_only: bool = False,
               check_affine: bool = False) -> StepTrace:
    """Trace a step at ``base`` sizes and one more sample of each batch it uses.

    ``forward_only``: work with no ``backward()`` (an evaluation pass).
    ``check_affine``: trace once more, two samples further in each batch, and raise
    :class:`NotAffine` unless every size and FLOP count is where the three traces put it
    (a B x B similarity matrix is not: costcl's evaluation at any batch would be wrong).

    The trained model's ``requires_grad`` flags are set for the trace and
    restored afterwards; it is put in training mode as a real step would be.
    """
    b0, r0 = base
    points = [(b0, r0), (b0 + 1, r0)] + ([(b0, r0 + 1)] if replay else [])
    raws = []
    setup = None
    for b, r in points:
        raw, setup = _with_all_trainable(factory, b, r, forward_only)
        raws.append(raw)
    if not replay:
        raws.append(raws[0])
    assert setup is not None
    trace = combine(setup.model, setup.input_shape, setup.num_classes, raws, b0, r0)
    if check_affine:
        b, r = b0 + 2, r0 + (2 if replay else 0)
        check_sizes(trace, _with_all_trainable(factory, b, r, forward_only)[0], b, r,
                    f"{b} (replay {r})" if replay else str(b))
    return trace


class NotAffine(CostclError):
    """A traced step's sizes are not affine in the batch sizes; the message names one."""


def check_sizes(trace: StepTrace, raw: RawTrace, b: int, r: int, label: str) -> None:
    """``raw``, traced at (b, r), against ``trace`` evaluated there: same ops, same bytes
    in every storage, same FLOPs in every op."""
    if [o.name for o in raw.ops] != [o.name for o in trace.ops] or \
            len(raw.storages) != len(trace.storages):
        raise NotAffine(f"its step runs other ops at batch {b} than at batch {b - 2}")
    for got, want in zip(raw.storages, trace.storages):
        if got.nbytes != at(want.nbytes, b, r):
            op = trace.ops[want.producer].name if 0 <= want.producer < len(trace.ops) else "?"
            if op == RNN_LAYER_OP:  # oneDNN's workspace: sized at the batch by the simulator
                continue
            raise NotAffine(f"a tensor made by {op} holds {got.nbytes:,} bytes at batch "
                            f"{label}, not the {at(want.nbytes, b, r):,} an affine "
                            "size would")
    for got_op, want_op in zip(raw.ops, trace.ops):
        if got_op.flops is not None and want_op.macs_by_kind and \
                got_op.flops.forward != at(want_op.forward_flops, b, r):
            raise NotAffine(f"{got_op.name} costs {got_op.flops.forward:,} FLOPs at batch "
                            f"{label}, not the {at(want_op.forward_flops, b, r):,} an "
                            "affine count would")


def _with_all_trainable(factory: SetupFactory, b: int, r: int,
                        forward_only: bool = False) -> tuple[RawTrace, TraceSetup]:
    box: list[TraceSetup] = []

    def wrapped(bb: int, rr: int, hook: BackwardHook) -> TraceSetup:
        setup = factory(bb, rr, hook)
        box.append(setup)
        flags = {n: p.requires_grad for n, p in setup.model.named_parameters()}
        mode = setup.model.training
        for p in setup.model.parameters():
            p.requires_grad_(True)
        setup.model.train()
        inner = setup.run

        def run() -> object:
            try:
                return inner()
            finally:
                for n, p in setup.model.named_parameters():
                    p.requires_grad_(flags[n])
                setup.model.train(mode)

        setup.run = run
        return setup

    return _trace_once(wrapped, b, r, forward_only)
