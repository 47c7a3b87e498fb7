"""Output rules: an op's outputs made from its arguments' metadata, without its kernel.

Several aten ops' meta kernels are Python references wrapped in
``torch._disable_dynamo``: their first call imports torch._dynamo (1.3 s here, and
sympy with it), and every call costs the reference's Python.  A rule makes the same
empty outputs from the arguments' shapes, strides and dtypes, written from that
reference for the cases it is sure of; anywhere else it answers ``None`` and the
kernel runs.  :func:`costmodel.trace.meta_outputs.run` consults :data:`RULES` the
first time it meets a signature.  tests/test_meta_outputs.py holds every rule to the
kernel it replaces, case by case.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

aten = torch.ops.aten
NUMBER = (bool, int, float)
"""A Python scalar an element-wise op takes beside a tensor (it never sets the dtype
of a floating result, nor an integer one's unless it is a float)."""

_COMPUTATION_DTYPE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}
"""torch._prims_common.get_computation_dtype, for the floating dtypes the rules admit."""


def _dense(t: torch.Tensor) -> bool:
    """An element-wise result keeps these strides (torch's rule for dense inputs)."""
    return t.dtype.is_floating_point and _dense_layout(t)


def _like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.empty_like`` for a dense ``t``: the same strides (empty_like's own meta
    kernel is a Python reference that imports sympy)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=dtype or t.dtype, device="meta")


def _dense_layout(t: torch.Tensor) -> bool:
    return t.is_contiguous() or _also_channels_last(t)


def _plainly_contiguous(t: torch.Tensor) -> bool:
    """Contiguous and not channels-last as well (a 4-D map with 1x1 spatial size is both,
    and the kernels that pick a memory format may pick either)."""
    return t.is_contiguous() and not _also_channels_last(t)


def native_batch_norm(input: torch.Tensor, weight: torch.Tensor | None,  # noqa: A002
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
    return (_like(input),
            *(torch.empty(shape, dtype=stats, device="meta") for shape in shapes_))


def addmm(bias: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor, *,
           beta: float = 1, alpha: float = 1) -> torch.Tensor | None:
    """torch._decomp.decompositions.addmm: ``alpha * mm(mat1, mat2) + beta * bias``, contiguous."""
    if mat1.dim() != 2 or mat2.dim() != 2 or mat1.shape[1] != mat2.shape[0] or \
            not mat1.dtype.is_floating_point or not mat1.dtype == mat2.dtype == bias.dtype:
        return None
    out = (mat1.shape[0], mat2.shape[1])
    if bias.dim() > 2 or any(b not in (1, o) for b, o in zip(reversed(bias.shape), reversed(out))):
        return None
    return torch.empty(out, dtype=mat1.dtype, device="meta")


def softmax(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor | None:
    """torch._decomp.decompositions._softmax: as :func:`log_softmax`."""
    return log_softmax(x, dim, half_to_float)


def log_softmax(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor | None:
    """torch._decomp.decompositions._log_softmax: contiguous, as eager's is."""
    if not x.dtype.is_floating_point or not -max(x.dim(), 1) <= dim < max(x.dim(), 1):
        return None
    return torch.empty(x.shape, dtype=torch.float32 if half_to_float else x.dtype, device="meta")


def nll_loss_forward(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
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


# -- element-wise ---------------------------------------------------------------------

def _broadcast(shapes: Sequence[Sequence[int]]) -> tuple[int, ...] | None:
    """torch.broadcast_shapes, or None where the shapes do not broadcast."""
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        for i, n in enumerate(s, ndim - len(s)):
            if n != out[i]:
                if out[i] != 1 and n != 1:
                    return None
                if out[i] == 1:
                    out[i] = n
    return tuple(out)


def _plain_dtype(operands: Sequence[object]) -> torch.dtype | None:
    """The result dtype where it is plain: every tensor of one floating or integer dtype or
    a bool mask, every other operand a Python number that keeps it (no float beside
    integers)."""
    tensors = [o for o in operands if isinstance(o, torch.Tensor)]
    if not tensors or any(not isinstance(o, (torch.Tensor, *NUMBER)) for o in operands):
        return None
    dtypes = {t.dtype for t in tensors} - {torch.bool}
    if len(dtypes) != 1:
        return None
    dtype = dtypes.pop()
    if dtype.is_floating_point:
        return dtype
    integer = dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    return dtype if integer and not any(isinstance(o, float) for o in operands) else None


def _elementwise_out(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor | None:
    """TensorIterator's output for inputs it lays out plainly: inputs of the output's shape
    with one dense layout keep it; contiguous or row-major-ordered inputs (0-d ones
    broadcast) give a contiguous output.  Anything else (a permuted input beside a
    broadcast one) is left to the kernel."""
    shape = _broadcast([t.shape for t in tensors])
    if shape is None:
        return None
    shaped = [t for t in tensors if t.dim() > 0]
    if not shaped:
        return torch.empty((), dtype=dtype, device="meta")
    first = shaped[0]
    if _dense_layout(first) and all(tuple(t.shape) == shape and t.stride() == first.stride()
                             for t in shaped):
        return torch.empty_strided(shape, first.stride(), dtype=dtype, device="meta")
    if all(t.is_contiguous() or _row_major_ordered(t) for t in shaped):
        return torch.empty(shape, dtype=dtype, device="meta")
    return None


def _row_major_ordered(t: torch.Tensor) -> bool:
    """Strides that fall from the outer dimension to the inner one, broadcast dimensions
    (size 1 or stride 0) aside: a slice of the logits, ``x[:, a:b]`` (CL code masks
    classes so).  TensorIterator then keeps the dimensions in order and makes a
    contiguous output."""
    strides = [st for n, st in zip(t.shape, t.stride()) if n != 1 and st != 0]
    return all(a > b for a, b in zip(strides, strides[1:]))  # (strides are never negative)


def _arithmetic_dtype(op: str, a: object, b: object, alpha: object = 1) -> torch.dtype | None:
    """The result dtype of ``a op b`` where :func:`_plain_dtype` knows it; torch refuses a
    bool in a subtraction, and integers divide into floats (left to the kernel)."""
    dtype = _plain_dtype((a, b, alpha))
    if dtype is None or (op == "div" and not dtype.is_floating_point) or \
            (op == "sub" and any(isinstance(t, torch.Tensor) and t.dtype == torch.bool
                                 for t in (a, b))):
        return None
    return dtype


def _arithmetic(op: str):  # noqa: ANN202
    def rule(a: object, b: object, *, alpha: object = 1) -> torch.Tensor | None:
        dtype = _arithmetic_dtype(op, a, b, alpha)
        return None if dtype is None else \
            _elementwise_out([t for t in (a, b) if isinstance(t, torch.Tensor)], dtype)
    rule.__doc__ = f"torch._refs.{op}: element-wise, broadcast."
    return rule


def _in_place(op: str):  # noqa: ANN202
    def fits(a: torch.Tensor, b: object, *, alpha: object = 1) -> bool:
        """``a op= b`` succeeds (and returns ``a``): the result has ``a``'s dtype and shape,
        and ``a`` is dense; how ``b`` is laid out (an expanded mask) does not matter."""
        dtype = _arithmetic_dtype(op, a, b, alpha)
        shape = _broadcast([a.shape, b.shape if isinstance(b, torch.Tensor) else ()])
        return dtype == a.dtype and shape == tuple(a.shape) and _dense_layout(a)
    return fits


add, sub, mul, div = (_arithmetic(op) for op in ("add", "sub", "mul", "div"))


def pow_scalar(a: torch.Tensor, exponent: object) -> torch.Tensor | None:
    """torch._refs.pow of a floating tensor to a Python number: laid out as ``a``."""
    return _like(a) if _dense(a) and isinstance(exponent, NUMBER) else None


def where(condition: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """torch._refs.where: element-wise over the three, the dtype of ``a`` and ``b``."""
    dtype = _plain_dtype((a, b))
    if dtype is None or condition.dtype != torch.bool:
        return None
    return _elementwise_out([condition, a, b], dtype)


def unary(a: torch.Tensor) -> torch.Tensor | None:
    """An element-wise unary reference on a floating tensor (relu, exp, sqrt, abs, ...):
    its dtype and, for a dense input, its strides."""
    return _like(a) if _dense(a) else None


def isnan(a: torch.Tensor) -> torch.Tensor | None:
    """torch._refs.isnan: ``a != a``, a bool tensor laid out as ``a``."""
    return _like(a, torch.bool) if _dense(a) else None


def cat(tensors: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor | None:
    """torch._refs.cat (and the meta kernel's memory format) for contiguous inputs of one
    dtype and rank; empty inputs, which cat skips, and layouts that are contiguous and
    channels-last at once are left to the kernel."""
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        return None
    first = tensors[0]
    ndim = first.dim()
    if ndim == 0 or not -ndim <= dim < ndim:
        return None
    dim %= ndim
    for t in tensors:
        if t.dtype != first.dtype or t.dim() != ndim or t.numel() == 0 or \
                not _plainly_contiguous(t) or \
                any(n != m for i, (n, m) in enumerate(zip(t.shape, first.shape)) if i != dim):
            return None
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return torch.empty(shape, dtype=first.dtype, device="meta")


def stack(tensors: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor | None:
    """torch._refs.stack (each input unsqueezed, then :func:`cat`) for non-empty contiguous
    inputs of one dtype and shape: a new dimension of ``len(tensors)`` at ``dim``."""
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        return None
    first = tensors[0]
    ndim = first.dim() + 1
    if not -ndim <= dim < ndim:
        return None
    if any(t.dtype != first.dtype or t.shape != first.shape or t.numel() == 0 or
           not _plainly_contiguous(t) for t in tensors):
        return None
    shape = list(first.shape)
    shape.insert(dim % ndim, len(tensors))
    return torch.empty(shape, dtype=first.dtype, device="meta")


def _also_channels_last(t: torch.Tensor) -> bool:
    return (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)) or \
        (t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d))


# -- convolution ----------------------------------------------------------------------

def convolution(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                transposed: bool, output_padding: Sequence[int], groups: int) -> torch.Tensor | None:
    """torch._meta_registrations.meta_conv for a plain convolution of a contiguous input
    (contiguous output); its checks go through torch._check, whose first call imports sympy."""
    spatial = x.dim() - 2
    if transposed or spatial not in (1, 2, 3) or weight.dim() != x.dim() or \
            not x.dtype.is_floating_point or weight.dtype != x.dtype or \
            (bias is not None and (bias.dtype != x.dtype or tuple(bias.shape) != (weight.shape[0],))) or \
            not _plainly_contiguous(x) or \
            not (len(stride) == len(padding) == len(dilation) == spatial) or \
            groups < 1 or x.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups:
        return None
    out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
           for n, p, d, k, s in zip(x.shape[2:], padding, dilation, weight.shape[2:], stride)]
    if any(o < 1 for o in out) or min(stride, default=1) < 1 or min(dilation, default=1) < 1 or \
            min(padding, default=0) < 0:
        return None
    return torch.empty((x.shape[0], weight.shape[0], *out), dtype=x.dtype, device="meta")


def avg_pool2d(x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int] = (),
               padding: Sequence[int] = (0,), ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None
               ) -> torch.Tensor | None:
    """torch._meta_registrations.meta_avg_pool2d without ceil mode, on a contiguous
    (N, C, H, W) or (C, H, W) input: the pooled shape, contiguous."""
    k = _pair(kernel_size)
    s = _pair(stride) if len(stride) else k
    p = _pair(padding)
    if k is None or s is None or p is None or ceil_mode or x.dim() not in (3, 4) or \
            not x.dtype.is_floating_point or not _plainly_contiguous(x) or \
            min(*k, *s) < 1 or min(p) < 0 or any(2 * pi > ki for pi, ki in zip(p, k)):
        return None
    out = [(n + 2 * pi - ki) // si + 1 for n, pi, ki, si in zip(x.shape[-2:], p, k, s)]
    if any(o < 1 for o in out):
        return None
    return torch.empty((*x.shape[:-2], *out), dtype=x.dtype, device="meta")


def _pair(v: Sequence[int]) -> tuple[int, int] | None:
    v = tuple(v)
    return (v[0], v[0]) if len(v) == 1 else v if len(v) == 2 else None


def index(x: torch.Tensor, indices: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """torch._meta_registrations.meta_index_Tensor for one int64 index on the first dim of a
    contiguous tensor (rows gathered from a buffer): the index's shape, then the rows'."""
    if len(indices) != 1 or not isinstance(indices[0], torch.Tensor) or \
            indices[0].dtype != torch.int64 or x.dim() == 0 or not _plainly_contiguous(x):
        return None
    return torch.empty((*indices[0].shape, *x.shape[1:]), dtype=x.dtype, device="meta")


# -- factories ------------------------------------------------------------------------

_ABSENT = object()


def randint_low(low: int, high: int, size: Sequence[int], *, dtype: object = _ABSENT,
                layout: object = None, device: object = None,
                pin_memory: bool | None = None) -> torch.Tensor | None:
    """torch._refs.randint on meta (a replay batch's indices): ``size`` of the schema's
    default int64 when no dtype is passed, of the default float dtype when ``None`` is."""
    if torch.device(device or "cpu").type != "meta" or layout not in (None, torch.strided) or \
            high <= low or any(n < 0 for n in size):
        return None
    dt = torch.int64 if dtype is _ABSENT else torch.get_default_dtype() if dtype is None else dtype
    return torch.empty(tuple(size), dtype=dt, device="meta")


# -- reductions -----------------------------------------------------------------------

def _reduced(shape: Sequence[int], dims: Sequence[int] | None, keepdim: bool) -> list[int] | None:
    ndim = len(shape)
    if dims is None or len(dims) == 0:
        dims = range(ndim)
    if any(not isinstance(d, int) or not -max(ndim, 1) <= d < max(ndim, 1) for d in dims):
        return None
    chosen = {d % max(ndim, 1) for d in dims}
    return [1 if i in chosen else n for i, n in enumerate(shape) if keepdim or i not in chosen]


def mean_dim(x: torch.Tensor, dim: Sequence[int] | None, keepdim: bool = False, *,
             dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """torch._refs.mean over ``dim`` of a contiguous floating tensor: the reduced shape,
    contiguous (global average pooling)."""
    if dtype is not None or not x.dtype.is_floating_point or not _plainly_contiguous(x) or \
            x.numel() == 0:
        return None
    shape = _reduced(x.shape, dim, keepdim)
    return None if shape is None else torch.empty(shape, dtype=x.dtype, device="meta")


def mean(x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """torch._refs.mean of every element of a floating tensor: one number."""
    if dtype is not None or not x.dtype.is_floating_point:
        return None
    return torch.empty((), dtype=x.dtype, device="meta")


def any_(x: torch.Tensor) -> torch.Tensor | None:
    """torch._refs.any of a bool tensor: one bool."""
    return torch.empty((), dtype=torch.bool, device="meta") if x.dtype == torch.bool else None


def linalg_vector_norm(x: torch.Tensor, ord: object = 2, dim: Sequence[int] | None = None,  # noqa: A002
                       keepdim: bool = False, *, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """torch._refs.linalg.vector_norm of a non-empty floating tensor: the reduced shape,
    contiguous, in the input's dtype."""
    if dtype is not None or not x.dtype.is_floating_point or x.numel() == 0 or \
            not isinstance(ord, NUMBER):
        return None
    shape = _reduced(x.shape, dim, keepdim)
    return None if shape is None else torch.empty(shape, dtype=x.dtype, device="meta")


def mse_loss(x: torch.Tensor, target: torch.Tensor, reduction: int = 1) -> torch.Tensor | None:
    """torch._refs.nn.functional.mse_loss reduced to one number (mean or sum) over two
    tensors of one floating dtype and shape."""
    if reduction not in (1, 2) or x.shape != target.shape or x.dtype != target.dtype or \
            not x.dtype.is_floating_point:
        return None
    return torch.empty((), dtype=x.dtype, device="meta")


RULES = {aten.relu.default: unary,  # torch._refs.nn.functional.relu: where(a <= 0, 0, a)
         aten.native_batch_norm.default: native_batch_norm,
         aten.addmm.default: addmm,
         aten._log_softmax.default: log_softmax,
         aten._softmax.default: softmax,
         aten.nll_loss_forward.default: nll_loss_forward,
         aten.add.Tensor: add,
         aten.sub.Tensor: sub,
         aten.mul.Tensor: mul,
         aten.div.Tensor: div,
         aten.pow.Tensor_Scalar: pow_scalar,
         aten.where.self: where,
         aten.cat.default: cat,
         aten.stack.default: stack,  # an LSTM's final states (oneDNN's route)
         aten.isnan.default: isnan,
         aten.exp.default: unary,
         aten.neg.default: unary,
         aten.sqrt.default: unary,
         aten.rsqrt.default: unary,
         aten.abs.default: unary,
         aten.convolution.default: convolution,
         aten.mean.dim: mean_dim,
         aten.mean.default: mean,
         aten.any.default: any_,
         aten.index.Tensor: index,
         aten.randint.low: randint_low,
         aten.avg_pool2d.default: avg_pool2d,
         aten.linalg_vector_norm.default: linalg_vector_norm,
         aten.mse_loss.default: mse_loss}
"""Op -> its outputs made from the arguments' metadata (``None``: run the kernel)."""


IN_PLACE = {aten.add_.Tensor: _in_place("add"),
            aten.sub_.Tensor: _in_place("sub"),
            aten.mul_.Tensor: _in_place("mul"),
            aten.div_.Tensor: _in_place("div")}
"""In-place op -> whether it would succeed (it then returns its first argument)."""
