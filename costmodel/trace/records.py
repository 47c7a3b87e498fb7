"""Plain records of what one traced forward pass did.

A trace is taken on the meta device at two batch sizes; every count that depends
on the batch is then stored as a :data:`Lin` pair ``(fixed, per_sample)``, so one
trace answers for every batch size (sizes of CNN activations are affine in the
batch).  Nothing here runs anything: these are the facts the formulas read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

Lin = tuple[int, int]
"""An integer affine in the batch size: ``fixed + per_sample * batch``."""

ZERO: Lin = (0, 0)


def at(value: Lin, batch: int) -> int:
    """Evaluate a :data:`Lin` at a batch size."""
    return value[0] + value[1] * batch


def fit(small: int, large: int, b_small: int, b_large: int) -> Lin:
    """The affine function through two observations; exact or it raises."""
    per_sample, rest = divmod(large - small, b_large - b_small)
    if rest:
        raise ArithmeticError(f"size {small}->{large} is not affine in the batch")
    return (small - per_sample * b_small, per_sample)


class StorageKind(str, Enum):
    PARAM = "parameter"
    BUFFER = "model_buffer"
    INPUT = "input"
    ACTIVATION = "activation"


@dataclass(slots=True)
class StorageFact:
    """One storage that existed during the forward.

    ``last_use`` is Python liveness: the index of the last op after which the
    program still referenced it (``None``: still referenced when the forward
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


@dataclass(slots=True)
class NodeFact:
    """One autograd node created by the forward.

    ``edges[i]`` is ``(target node index, target input slot)`` or ``None`` for
    an input that needs no gradient.  ``slot_bytes[j]`` is the size of the
    gradient that arrives at input slot ``j`` (the node's forward output ``j``).
    """

    name: str
    edges: tuple[tuple[int, int] | None, ...]
    slot_bytes: tuple[Lin, ...]
    saved: tuple[int, ...]
    leaf: str | None = None
    """For AccumulateGrad: the parameter name (or '<input>')."""


@dataclass
class ModuleFact:
    name: str
    type: str
    params: int
    param_names: tuple[str, ...]


@dataclass
class ModelTrace:
    """Everything the engine knows about one model's forward + loss."""

    ops: list[OpFact]
    storages: list[StorageFact]
    nodes: list[NodeFact]
    """In autograd sequence order (creation order)."""
    root: int
    param_sids: dict[str, int]
    param_numel: dict[str, int]
    param_bytes: dict[str, int]
    buffer_sids: dict[str, int]
    modules: list[ModuleFact]
    input_sids: tuple[int, ...]
    batch_sizes: tuple[int, int]
    dtype: str
    input_shape: tuple[int, ...]
    num_classes: int
    module_shapes: dict[str, tuple[tuple[Lin, ...], tuple[Lin, ...]]] = field(default_factory=dict)
    """First input and output shape of each module; each dim a :data:`Lin`."""
