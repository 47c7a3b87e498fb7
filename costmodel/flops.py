"""FLOP formulas, one small function per aten op, registered in a table.

Convention (``torch``): the one of :class:`torch.utils.flop_counter.FlopCounterMode`,
so every count here can be checked exactly against it:

* 2 FLOPs per multiply-accumulate; only convolutions and matrix products count.
* The backward of a convolution is the two convolutions PyTorch runs: the
  gradient of the input costs what the forward costs; the gradient of the
  weight is counted the way FlopCounterMode counts it, which for a grouped
  (e.g. depthwise) convolution is ``groups`` times the forward cost even though
  the arithmetic really needed is only the forward cost.  We follow it so the
  numbers stay comparable; ``grouped_weight_grad_excess`` in the per-layer table
  says how much of the backward that convention adds.
* The backward of a matrix product is one matrix product per input that needs
  a gradient, each as expensive as the forward.

A formula receives the op's arguments with every tensor replaced by its shape
(and its outputs' shapes) and returns the forward FLOPs and, for each tensor
argument in order, the FLOPs of computing its gradient.  Element-wise work is
estimated apart by :func:`elementwise_flops`; FlopCounterMode never counts it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OpFlops:
    forward: int
    grads: tuple[int, ...]
    """Backward FLOPs of each tensor argument's gradient, in argument order."""
    kind: str
    """'conv', 'linear' or 'matmul': how the FLOP-counting tools group it."""
    excess: int = 0
    """Part of ``grads`` that only the torch convention counts (grouped convs)."""


Formula = Callable[[Sequence, Sequence[Shape]], OpFlops]
FORMULAS: dict[str, Formula] = {}


def register(*names: str) -> Callable[[Formula], Formula]:
    def wrap(fn: Formula) -> Formula:
        for name in names:
            FORMULAS[name] = fn
        return fn

    return wrap


def conv_flops(x: Shape, w: Shape, out: Shape, transposed: bool = False) -> int:
    """FlopCounterMode's conv_flop_count: 2 * spatial * kernel * N * Cout * Cin/groups."""
    batch = x[0]
    spatial = (x if transposed else out)[2:]
    c_out, c_in, *kernel = w
    return 2 * prod(spatial) * prod(kernel) * batch * c_out * c_in


def _t(shape: Shape) -> Shape:
    return (shape[1], shape[0], *shape[2:])


@register(
    "aten.convolution.default",
    "aten._convolution.default",
    "aten.cudnn_convolution.default",
    "aten._slow_conv2d_forward.default",
    "aten.convolution_overrideable.default",
)
def _convolution(args: Sequence, outs: Sequence[Shape]) -> OpFlops:
    x, w, bias = args[0], args[1], args[2]
    transposed = bool(args[6]) if len(args) > 6 else False
    groups = int(args[8]) if len(args) > 8 else 1
    out = outs[0]
    fwd = conv_flops(x, w, out, transposed)
    grad_x = conv_flops(out, w, x, not transposed)
    if transposed:
        grad_w = conv_flops(_t(out), _t(x), _t(w))
    else:
        grad_w = conv_flops(_t(x), _t(out), _t(w))
    grads = (grad_x, grad_w) + ((0,) if bias is not None else ())
    excess = grad_w - fwd if groups > 1 else 0
    return OpFlops(fwd, grads, "conv", excess)


def _mm(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


@register("aten.mm.default")
def _matmul(args: Sequence, outs: Sequence[Shape]) -> OpFlops:
    (m, k), (_, n) = args[0], args[1]
    f = _mm(m, k, n)
    return OpFlops(f, (f, f), "linear")


@register("aten.addmm.default")
def _addmm(args: Sequence, outs: Sequence[Shape]) -> OpFlops:
    (m, k), (_, n) = args[1], args[2]
    f = _mm(m, k, n)
    return OpFlops(f, (0, f, f), "linear")


@register("aten.bmm.default")
def _bmm(args: Sequence, outs: Sequence[Shape]) -> OpFlops:
    (b, m, k), (_, _, n) = args[0], args[1]
    f = b * _mm(m, k, n)
    return OpFlops(f, (f, f), "matmul")


@register("aten.baddbmm.default")
def _baddbmm(args: Sequence, outs: Sequence[Shape]) -> OpFlops:
    (b, m, k), (_, _, n) = args[1], args[2]
    f = b * _mm(m, k, n)
    return OpFlops(f, (0, f, f), "matmul")


@register(
    "aten._scaled_dot_product_flash_attention_for_cpu.default",
    "aten._scaled_dot_product_flash_attention.default",
    "aten._scaled_dot_product_efficient_attention.default",
    "aten._scaled_dot_product_cudnn_attention.default",
)
def _sdpa(args: Sequence, outs: Sequence[Shape]) -> OpFlops:
    """FlopCounterMode's sdpa_flop_count forward (QK^T and PV, with the query's heads), and
    its sdpa_backward_flop_count backward: the scores recomputed (QK^T), dP = dO V^T and
    dQ = dS K charged to the query, dK = dS^T Q to the key, dV = P^T dO to the value."""
    (b, h, s_q, d), (_, _, s_k, _), (_, _, _, d_v) = args[0], args[1], args[2]
    qk, pv = 2 * b * h * s_q * s_k * d, 2 * b * h * s_q * s_k * d_v
    return OpFlops(qk + pv, (2 * qk + pv, qk, pv), "matmul")


@register("aten.mkldnn_rnn_layer.default")
def _lstm_layer(args: Sequence, outs: Sequence[Shape]) -> OpFlops:
    """oneDNN's LSTM layer (:mod:`costmodel.trace.recurrent`): per step, the gates' two GEMMs,
    input (I -> 4H) and hidden state (H -> 4H).  Its backward computes every gradient
    whatever is needed: the input's and the hidden states' (one GEMM each, charged to
    the input and to the initial state) and both weights'.  Kind 'rnn': all of it is
    counted when any gradient is (:func:`costmodel.memory.graph.flops`)."""
    (steps, batch, features), (gates, _), (_, hidden) = args[0], args[1], args[2]
    x_gemm, h_gemm = _mm(steps * batch, features, gates), _mm(steps * batch, hidden, gates)
    return OpFlops(x_gemm + h_gemm, (x_gemm, x_gemm, h_gemm, 0, 0, h_gemm, 0), "rnn")


def op_flops(name: str, args: Sequence, outs: Sequence[Shape]) -> OpFlops | None:
    formula = FORMULAS.get(name)
    return formula(args, outs) if formula else None


# --- element-wise work: an estimate, reported apart ---------------------------

_FREE = (
    "view", "_unsafe_view", "t", "transpose", "permute", "expand", "reshape", "alias",
    "squeeze", "unsqueeze", "slice", "select", "as_strided", "detach", "empty",
    "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full", "clone", "copy_",
    "_to_copy", "lift_fresh", "split", "split_with_sizes", "unbind", "cat", "stack",
    "new_empty", "new_zeros", "flatten", "contiguous", "masked_fill", "index",
    "index_select", "gather", "randperm", "arange", "scalar_tensor", "_local_scalar_dense",
)
_PER_ELEMENT = {"native_batch_norm": 4, "_native_batch_norm_legit": 4,
                "_native_batch_norm_legit_functional": 4, "native_layer_norm": 5,
                "_log_softmax": 3, "_softmax": 3}


def elementwise_flops(name: str, in_numel: int, out_numel: int) -> int:
    """One FLOP per output element for element-wise ops; a few named exceptions.

    Batch norm in training computes mean, variance, normalises and applies the
    affine transform (4 per element); softmax exponentiates, sums and divides
    (3); reductions read every input element.  Views and copies cost nothing.
    """
    base = name.split(".")[1] if name.startswith("aten.") else name
    if base.rstrip("_") in _FREE or base in _FREE:
        return 0
    if base in _PER_ELEMENT:
        return _PER_ELEMENT[base] * in_numel
    if base in ("mean", "sum", "avg_pool2d", "_adaptive_avg_pool2d", "max_pool2d_with_indices",
                "nll_loss_forward", "amax", "max"):
        return in_numel
    return out_numel
