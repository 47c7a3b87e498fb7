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

A few ops whose meta kernel is a Python reference behind ``torch._disable_dynamo``
(batch norm, ReLU, a linear layer, cross-entropy) have a rule of their own in :data:`RULES`, written from that
reference: its first call would import torch._dynamo, 2 to 4 s of a cold estimate on
2 cores.  tests/test_meta_outputs.py holds each rule to the kernel it replaces.
"""
from __future__ import annotations

from typing import Any

import torch

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
    if not _admitted(func):
        return func(*args, **kwargs)
    if flat_args is None:
        flat_args = leaves(args, kwargs)
    key = _signature(func, flat_args)
    try:
        seen = key is not None and key in _OUTPUTS
    except TypeError:  # an argument that does not hash
        key = None
    if key is None:
        return func(*args, **kwargs)
    if seen:
        spec = _OUTPUTS[key]
        if spec is None:
            return func(*args, **kwargs)
        one, outs = spec
        made = tuple(torch.empty_strided(shape, stride, dtype=dtype, device="meta")
                     for shape, stride, dtype in outs)
        return made[0] if one else made
    rule = RULES.get(func)
    out = rule(*args, **kwargs) if rule is not None else None
    if out is None:
        out = func(*args, **kwargs)
    _OUTPUTS[key] = _record(out, flat_args)
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


# -- output rules for ops whose meta kernel is a slow Python reference -------------

_COMPUTATION_DTYPE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}
"""torch._prims_common.get_computation_dtype, for the floating dtypes the rules admit."""


def _dense(t: torch.Tensor) -> bool:
    """An element-wise result keeps these strides (torch's rule for dense inputs)."""
    return t.dtype.is_floating_point and (
        t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))
        or (t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d)))


def _relu(a: torch.Tensor) -> torch.Tensor | None:
    """torch._refs.nn.functional.relu: ``where(a <= 0, 0, a)``, element-wise on ``a``."""
    return torch.empty_like(a) if _dense(a) else None


def _native_batch_norm(input: torch.Tensor, weight: torch.Tensor | None,  # noqa: A002
                       bias: torch.Tensor | None, running_mean: torch.Tensor | None,
                       running_var: torch.Tensor | None, training: bool, momentum: float,
                       eps: float) -> tuple[torch.Tensor, ...] | None:
    """torch._decomp.decompositions.native_batch_norm_helper on a non-CPU device (meta):
    the output is element-wise on the input; the saved statistics are per channel in the
    computation dtype, and outside training they are the running statistics' copies."""
    if input.dim() < 2 or not _dense(input):
        return None
    stats = _COMPUTATION_DTYPE.get(input.dtype, input.dtype)
    if training:
        shapes_ = [(input.shape[1],)] * 2
    elif running_mean is None or running_var is None:
        return None
    else:
        shapes_ = [tuple(running_mean.shape), tuple(running_var.shape)]
    return (torch.empty_like(input),
            *(torch.empty(shape, dtype=stats, device="meta") for shape in shapes_))


def _addmm(bias: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor, *,
           beta: float = 1, alpha: float = 1) -> torch.Tensor | None:
    """torch._decomp.decompositions.addmm: ``alpha * mm(mat1, mat2) + beta * bias``, contiguous."""
    if mat1.dim() != 2 or mat2.dim() != 2 or mat1.shape[1] != mat2.shape[0] or \
            not mat1.dtype.is_floating_point or not mat1.dtype == mat2.dtype == bias.dtype:
        return None
    out = (mat1.shape[0], mat2.shape[1])
    if bias.dim() > 2 or any(b not in (1, o) for b, o in zip(reversed(bias.shape), reversed(out))):
        return None
    return torch.empty(out, dtype=mat1.dtype, device="meta")


def _log_softmax(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor | None:
    """torch._decomp.decompositions._log_softmax: contiguous, as eager's is."""
    if not x.dtype.is_floating_point or not -max(x.dim(), 1) <= dim < max(x.dim(), 1):
        return None
    return torch.empty(x.shape, dtype=torch.float32 if half_to_float else x.dtype, device="meta")


def _nll_loss_forward(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                      reduction: int, ignore_index: int) -> tuple[torch.Tensor, ...] | None:
    """torch._decomp.decompositions.nll_loss_forward on a (N, C) input: the loss per sample
    (reduction 'none') or one number, and the total weight."""
    if x.dim() != 2 or target.dim() != 1 or target.shape[0] != x.shape[0] or \
            target.dtype != torch.int64 or not x.dtype.is_floating_point or \
            reduction not in (0, 1, 2) or \
            (weight is not None and (weight.dim() != 1 or weight.shape[0] != x.shape[1])):
        return None
    loss = (x.shape[0],) if reduction == 0 else ()
    return (torch.empty(loss, dtype=x.dtype, device="meta"),
            torch.empty((), dtype=x.dtype, device="meta"))


RULES = {torch.ops.aten.relu.default: _relu,
         torch.ops.aten.native_batch_norm.default: _native_batch_norm,
         torch.ops.aten.addmm.default: _addmm,
         torch.ops.aten._log_softmax.default: _log_softmax,
         torch.ops.aten.nll_loss_forward.default: _nll_loss_forward}
"""Op -> its outputs made from the arguments' metadata (``None``: run the kernel)."""
