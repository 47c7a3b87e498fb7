"""FlopCounterMode on the kernel path the device runs.

The trace calls the attention kernel the device would select
(:mod:`costmodel.trace.attention`); a measurement on meta tensors must run the same
kernel, so :func:`kernel_path` routes attention the same way.  FlopCounterMode has
formulas for the CUDA flash, memory-efficient and cuDNN attention kernels but none
for the CPU's flash kernel (``_scaled_dot_product_flash_attention_for_cpu``): it
would count that kernel as 0 FLOPs.  :func:`counter` registers FlopCounterMode's own
flash formulas (``sdpa_flop_count``, ``sdpa_backward_flop_count``) for it, the same
arithmetic as the CUDA flash kernel, so the count is the kernel's, not zero.

LSTMs likewise run on the CPU's oneDNN kernel (:mod:`costmodel.trace.recurrent`), for
which FlopCounterMode has no formula either: :func:`counter` registers the GEMMs that
kernel runs (the gates' two per step forward, and in its backward the input's, the
hidden states' and both weights' gradients, all of them whatever is needed).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils import flop_counter

from costmodel.trace import attention, recurrent


def _flash_forward(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any,
                   out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _flash_backward(grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any,
                    *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                                 value_shape)


def _lstm_gemms(input_shape: Any, w_ih_shape: Any, w_hh_shape: Any) -> int:
    (steps, batch, features), (gates, _), (_, hidden) = input_shape, w_ih_shape, w_hh_shape
    return 2 * steps * batch * gates * (features + hidden)


def _lstm_forward(input_shape: Any, w_ih_shape: Any, w_hh_shape: Any, *args: Any,
                  out_shape: Any = None, **kwargs: Any) -> int:
    return _lstm_gemms(input_shape, w_ih_shape, w_hh_shape)


def _lstm_backward(input_shape: Any, w_ih_shape: Any, w_hh_shape: Any, *args: Any,
                   out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * _lstm_gemms(input_shape, w_ih_shape, w_hh_shape)


_aten = torch.ops.aten
KERNEL_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _flash_forward,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_backward,
    _aten.mkldnn_rnn_layer: _lstm_forward,
    _aten.mkldnn_rnn_layer_backward: _lstm_backward,
}
"""CPU kernels FlopCounterMode has no formula for -> the one it is given (once)."""


def counter() -> flop_counter.FlopCounterMode:
    """A FlopCounterMode that also counts the CPU flash attention and LSTM kernels."""
    for op, formula in KERNEL_FORMULAS.items():
        if op not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op)(formula)
    return flop_counter.FlopCounterMode(display=False)


@contextlib.contextmanager
def kernel_path(s: Any) -> Iterator[None]:
    """Attention and LSTMs routed as the scenario's trace routes them (on meta tensors)."""
    with attention.route(attention.kernel_family(s.device, s.attention)), \
            recurrent.route(recurrent.kernel_family(s.device)):
        yield

