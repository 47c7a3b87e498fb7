"""FlopCounterMode on the kernel path the device runs.

The trace calls the attention kernel the device would select
(:mod:`costmodel.trace.attention`); a measurement on meta tensors must run the same
kernel, so :func:`kernel_path` routes attention the same way.  FlopCounterMode has
formulas for the CUDA flash, memory-efficient and cuDNN attention kernels but none
for the CPU's flash kernel (``_scaled_dot_product_flash_attention_for_cpu``): it
would count that kernel as 0 FLOPs.  :func:`counter` registers FlopCounterMode's own
flash formulas (``sdpa_flop_count``, ``sdpa_backward_flop_count``) for it, the same
arithmetic as the CUDA flash kernel, so the count is the kernel's, not zero.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.utils import flop_counter

from costmodel.trace import attention


def _register_cpu_flash() -> None:
    registry = flop_counter.flop_registry
    aten = torch.ops.aten
    if aten._scaled_dot_product_flash_attention_for_cpu not in registry:
        @flop_counter.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
        def _forward(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any,
                     out_shape: Any = None, **kwargs: Any) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    if aten._scaled_dot_product_flash_attention_for_cpu_backward not in registry:
        @flop_counter.register_flop_formula(
            aten._scaled_dot_product_flash_attention_for_cpu_backward)
        def _backward(grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any,
                      *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape,
                                                         key_shape, value_shape)


def counter() -> flop_counter.FlopCounterMode:
    """A FlopCounterMode that also counts the CPU flash attention kernel."""
    _register_cpu_flash()
    return flop_counter.FlopCounterMode(display=False)


def kernel_path(s: Any) -> contextlib.AbstractContextManager[None]:
    """Attention routed as the scenario's trace routes it (on meta tensors)."""
    return attention.route(attention.kernel_family(s.device, s.attention))

