"""Run an aten op on meta tensors, from a record of its outputs when it was seen before.

A trace dispatches tens of thousands of ops, and most of their meta kernels are Python
decompositions (``relu``: about 0.5 ms a call; its first call imports torch._dynamo).
An op whose outputs are new tensors (no alias, no mutated argument) has outputs that
depend only on the arguments' shapes, strides, dtypes and plain values: the first call
with a given signature runs the kernel and records the outputs' metadata, and every
later call makes empty tensors with the same metadata (2 us).  What is recorded is
checked once: outputs on meta, each in a storage of its own that it fills exactly
(``_unsafe_view``, unannotated but sharing its input's storage, fails the check and
always runs).

Batch norm mutates its running statistics; on meta tensors that changes nothing, so
it is admitted too.

Ops whose meta kernel is a Python reference behind ``torch._disable_dynamo`` (batch
norm, ReLU, a linear layer, cross-entropy, addition, concatenation, ...) have output
rules (:mod:`costmodel.trace.meta_rules`): the reference's first call would import
torch._dynamo, 2 to 4 s of a cold estimate on 2 cores.

:class:`FastMeta` runs a plain meta forward (no trace) through the same records and rules.
"""
from __future__ import annotations

import gc
import sys
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from costmodel.trace.meta_rules import IN_PLACE, RULES

_ALWAYS = {torch.ops.aten.native_batch_norm.default}
"""Ops admitted despite a mutated argument (the mutation has no effect on meta)."""

_ADMITTED: dict[Any, bool] = {}
_OUTPUTS: dict[tuple, tuple | None] = {}
"""Signature -> (one tensor?, (shape, stride, dtype) of each output); None: run the op."""


def flat(tree: object, into: list) -> list:
    """The leaves of nested tuples and lists (an op's arguments or outputs), in order."""
    if isinstance(tree, (tuple, list)):
        for item in tree:
            flat(item, into)
    else:
        into.append(tree)
    return into


def shapes(tree: object) -> object:
    """``tree`` with each tensor replaced by its shape (for the FLOP formulas)."""
    if isinstance(tree, torch.Tensor):
        return tuple(tree.shape)
    if isinstance(tree, (tuple, list)):
        return type(tree)(shapes(a) for a in tree)
    return tree


def leaves(args: tuple, kwargs: dict) -> list:
    """An op's arguments flattened, keyword names included (what :func:`run` keys on)."""
    return flat((args, tuple(kwargs.items())), [])


def run(func, args: tuple, kwargs: dict, flat_args: list | None = None) -> object:  # noqa: ANN001
    """``func(*args, **kwargs)``: computed once per signature for an admitted op.
    ``flat_args``: :func:`leaves` of the arguments, when the caller has them already."""
    fits = IN_PLACE.get(func)
    if fits is not None:
        if flat_args is None:
            flat_args = leaves(args, kwargs)
        if all(a.device.type == "meta" for a in flat_args if isinstance(a, torch.Tensor)) \
                and fits(*args, **kwargs):
            return args[0]  # on meta, an in-place op that succeeds changes nothing
        return kernel(func, args, kwargs)
    if not _admitted(func):
        return kernel(func, args, kwargs)
    if flat_args is None:
        flat_args = leaves(args, kwargs)
    key = _signature(func, flat_args)
    try:
        seen = key is not None and key in _OUTPUTS
    except TypeError:  # an argument that does not hash
        key = None
    if key is None:
        return kernel(func, args, kwargs)
    if seen:
        spec = _OUTPUTS[key]
        if spec is None:
            return kernel(func, args, kwargs)
        one, outs = spec
        made = tuple(torch.empty_strided(shape, stride, dtype=dtype, device="meta")
                     for shape, stride, dtype in outs)
        return made[0] if one else made
    rule = RULES.get(func)
    out = rule(*args, **kwargs) if rule is not None else None
    if out is None:
        out = kernel(func, args, kwargs)
    _OUTPUTS[key] = _record(out, flat_args)
    return out


def kernel(func, args: tuple, kwargs: dict) -> object:  # noqa: ANN001
    """``func(*args, **kwargs)``, and if it imported a module (a Python reference's first
    call imports torch._dynamo), the cycles the import left collected at once: they
    reference the frames that called it, and so the step's tensors, which would otherwise
    outlive their last use in a trace that pauses the collector (:mod:`costmodel.gc_pause`;
    PyCIL's BiC step, whose bias layer multiplies a slice of the logits, was 2.6% over)."""
    modules = len(sys.modules)
    out = func(*args, **kwargs)
    if len(sys.modules) != modules:
        gc.collect()
    return out


def _admitted(func) -> bool:  # noqa: ANN001
    known = _ADMITTED.get(func)
    if known is None:
        schema = func._schema
        known = func in _ALWAYS or (
            bool(schema.returns)
            and all(str(r.type) == "Tensor" and r.alias_info is None for r in schema.returns)
            and not any(a.alias_info is not None and a.alias_info.is_write
                        for a in schema.arguments))
        _ADMITTED[func] = known
    return known


def _signature(func, flat_args: list) -> tuple | None:  # noqa: ANN001
    """The op and every argument's metadata; None when a tensor is not on meta."""
    key: list = [func]
    for a in flat_args:
        if isinstance(a, torch.Tensor):
            if a.device.type != "meta":
                return None
            key.append((tuple(a.shape), a.stride(), a.dtype))
        else:
            key.append((type(a), a))
    return tuple(key)


def _record(out: object, flat_args: list) -> tuple | None:
    """The outputs' metadata, or None unless each is a fresh meta tensor owning its storage."""
    one = isinstance(out, torch.Tensor)
    outs = (out,) if one else out
    if not isinstance(outs, tuple) or not all(isinstance(t, torch.Tensor) for t in outs):
        return None
    inputs = {a.untyped_storage()._cdata for a in flat_args if isinstance(a, torch.Tensor)}
    seen: set[int] = set()
    for t in outs:
        st = t.untyped_storage()
        fresh = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
        if (t.device.type != "meta" or st._cdata in inputs or st._cdata in seen
                or t.storage_offset() != 0 or st.nbytes() != fresh.untyped_storage().nbytes()):
            return None
        seen.add(st._cdata)
    return one, tuple((tuple(t.shape), t.stride(), t.dtype) for t in outs)


class FastMeta(TorchDispatchMode):
    """Every op on meta tensors through :func:`run`: a forward that only wants shapes
    (LightCL's feature maps) without the Python references' cost and imports."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # else torch wraps __torch_dispatch__ in dynamo.disable: an import

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        return run(func, args, kwargs or {})
