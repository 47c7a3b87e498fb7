"""Plain records of what one traced training step did.

A step is traced on the meta device at a few sizes; every count that depends
on the batch is then stored as a :data:`Lin` triple ``(fixed, per_sample,
per_replayed_sample)``, so one trace answers for every batch and replay batch
(sizes in CNNs are affine in both).  Nothing here runs anything: these are the
facts the formulas read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

Lin = tuple[int, int, int]
"""An integer affine in the batch sizes: ``fixed + per_sample*B + per_replayed*R``."""

ZERO: Lin = (0, 0, 0)


def at(value: Lin, batch: int, replay: int = 0) -> int:
    """Evaluate a :data:`Lin` at a batch size (and replay batch size)."""
    return value[0] + value[1] * batch + value[2] * replay


def fit(base: int, more_batch: int, more_replay: int, step_b: int, step_r: int,
        b0: int, r0: int) -> Lin:
    """The affine function through three observations; exact or it raises.

    ``base`` is observed at (b0, r0), ``more_batch`` at (b0 + step_b, r0) and
    ``more_replay`` at (b0, r0 + step_r).
    """
    per_b, rest_b = divmod(more_batch - base, step_b)
    per_r, rest_r = divmod(more_replay - base, step_r)
    if rest_b or rest_r:
        raise ArithmeticError(f"size {base} is not affine in the batch sizes")
    return (base - per_b * b0 - per_r * r0, per_b, per_r)


def add(a: Lin, b: Lin) -> Lin:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def scale(a: Lin, k: int) -> Lin:
    return (a[0] * k, a[1] * k, a[2] * k)


class StorageKind(str, Enum):
    PARAM = "parameters"
    BUFFER = "model_buffers"
    INPUT = "inputs"
    ACTIVATION = "activations"
    REPLAY = "buffer"
    STATE = "method_state"


@dataclass(slots=True)
class StorageFact:
    """One storage that existed during the step.

    ``last_use`` is Python liveness: the index of the last op after which the
    program still referenced it (``None``: still referenced when the step
    returned).  Autograd may keep it longer; that is decided per configuration
    from :attr:`NodeFact.saved`.
    """

    nbytes: Lin
    kind: StorageKind
    producer: int
    last_use: int | None
    owner: str
    is_float: bool = True


@dataclass(slots=True)
class OpFact:
    """One aten op of the forward, with what the FLOP formulas need."""

    name: str
    module: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    forward_flops: Lin = ZERO
    grad_flops: tuple[Lin, ...] = ()
    """Backward FLOPs for the gradient of each entry of ``inputs`` (same order)."""
    elementwise_flops: Lin = ZERO
    macs_by_kind: str = ""
    """'conv', 'linear', 'matmul' for FLOP-counted ops; '' otherwise."""
    grad_nodes: tuple[int | None, ...] = ()
    """For each entry of ``inputs``: the autograd node its gradient flows into
    (``None``: it can never need one).  The gradient is computed iff that node
    runs in the configuration at hand."""
    grouped_excess: Lin = ZERO
    """Backward FLOPs that only FlopCounterMode's grouped-conv rule counts."""
    numel_in: Lin = ZERO
    """Elements of the first tensor argument (what other counters' rules read)."""
    numel_out: Lin = ZERO
    kernel: str = ""
    """A convolution: 'conv' and when ATen runs it on its own kernel rather than oneDNN's
    (':plain1x1', ':smallimageN', :func:`~costmodel.trace.kernel_tags.native_path`)."""


@dataclass(slots=True)
class NodeFact:
    """One autograd node created by the step.

    ``edges[i]`` is ``(target node index, target input slot)`` or ``None`` for
    an input that needs no gradient.  ``slot_bytes[j]`` is the size of the
    gradient that arrives at input slot ``j`` (the node's forward output ``j``).
    """

    name: str
    edges: tuple[tuple[int, int] | None, ...]
    slot_bytes: tuple[Lin, ...]
    saved: tuple[int, ...]
    leaf: str | None = None
    """For AccumulateGrad: the parameter's qualified name."""
    saved_when: tuple[tuple[int, ...] | None, ...] = ()
    """Per entry of ``saved``: the edges of which one must need a gradient for autograd to
    save it (:mod:`~costmodel.trace.saved_guards`); ``None`` (or no entry): always saved."""
    kernel: str = ""
    """What its CPU kernel's scratch depends on beyond sizes
    (:mod:`costmodel.trace.kernel_tags`, read by :mod:`costmodel.memory.kernel_scratch`):
    a convolution's backward, 'conv' and ':strided', ':depthwiseK', ':nhwc', ':patch',
    ':group8', ':gemm...' (oneDNN's gemm:jit weight gradient), ':pointwise...' (its
    jit_1x1), ATen's own path; an LSTM layer's, 'lstm:steps:features:hidden[:copy]'."""


@dataclass(slots=True)
class Segment:
    """A ``backward()`` call: after op ``after_op``, from node ``root``."""

    after_op: int
    root: int


@dataclass
class ModuleFact:
    name: str
    type: str
    params: int
    param_names: tuple[str, ...]


RNN_LAYER_OP = "aten.mkldnn_rnn_layer.default"


@dataclass
class StepTrace:
    """Everything the engine knows about one training step of one model."""

    ops: list[OpFact]
    storages: list[StorageFact]
    nodes: list[NodeFact]
    """In autograd sequence order (creation order); AccumulateGrad nodes last."""
    segments: list[Segment]
    param_sids: dict[str, int]
    param_numel: dict[str, int]
    param_bytes: dict[str, int]
    modules: list[ModuleFact]
    dtype: str
    input_shape: tuple[int, ...]
    num_classes: int
    model_calls: int
    """How many times the step ran the trained model's forward."""
    module_shapes: dict[str, tuple[tuple[Lin, ...], tuple[Lin, ...]]] = field(default_factory=dict)
    """First input and output shape of each module; each dim a :data:`Lin`."""
    prologue_ops: int = 0
    """Ops before this index are work the code did before the step (a method's
    ``prepare``: LightCL's reference forward at the task's start).  Their results
    are alive through the step; they count no FLOPs and are never carried over."""
    zero_grad_at: int | None = None
    """Where the step calls ``ctx.zero_grad()`` (PyCIL: after the forward): the previous
    step's gradients are alive until the op before it.  ``None``: zeroed before the step."""
    kept_roots: list[KeptRoot] = field(default_factory=list)
    """Outputs of the trained model whose graph no ``backward()`` runs: the graph
    keeps what it saved for as long as the output is referenced."""

    @cached_property
    def has_onednn_lstm(self) -> bool:
        """Whether an LSTM runs on oneDNN's kernel: its workspace and scratch are rounded at
        the batch (:mod:`~costmodel.memory.onednn_rnn`), so its plans are made per batch."""
        return any(op.name == RNN_LAYER_OP for op in self.ops)

    @property
    def element_size(self) -> int:
        """Bytes of one element of the model's dtype."""
        return {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}.get(self.dtype, 4)
    installed_grads: list[tuple[int, str, int]] = field(default_factory=list)
    """(segment, parameter, storage id) of each tensor the step itself assigned to a
    parameter's ``.grad`` before that ``backward()`` (Mammoth's EWC installs its penalty
    gradient as views into one flat vector): the storage is a gradient, not an
    activation; backward adds into it in place; it outlives the step (freed by the
    next step's zero_grad) without being carried into it."""
    dropped: list[int] = field(default_factory=list)
    """Storage ids the step leaves for its loop (``ctx.keep``) where the loop lets them go
    before the next step (costcl's trainer): alive to the step's end, never carried."""


@dataclass(slots=True)
class KeptRoot:
    """A model output with a graph that is never back-propagated in the step."""

    node: int
    """Its ``grad_fn``'s index in :attr:`StepTrace.nodes`."""
    sid: int
    """Its storage: the graph lives as long as the program references it."""
