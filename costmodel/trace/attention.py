"""Attention traced on the kernel the device runs, not on meta's math decomposition.

``F.scaled_dot_product_attention`` picks a kernel from the tensors' device: on
meta it decomposes into ``bmm``, ``softmax`` and ``bmm`` and keeps the attention
matrix for backward; on the CPU PyTorch runs one fused flash kernel that keeps
only the output and a log-sum-exp per row (no L x L matrix), and on a CUDA GPU
flash or memory-efficient kernels.  The trace calls the kernel the device would
select (``--attention auto``, the default), or the math path (``math``), so the
saved tensors, the backward node and the FLOPs are the device's.

Which kernel:

* CPU: PyTorch's own ``torch._fused_sdp_choice`` asked on small CPU tensors
  with the call's heads, lengths, head size, dtype, mask and dropout (its checks
  do not depend on the batch); flash when it says so, else math.
* CUDA, with no GPU to ask: PyTorch's priority order (flash, efficient, math)
  with the conditions of ``sdp_utils.cpp`` that depend on the call, for an sm80+
  GPU (A100, H100, Jetson Orin): flash for fp16/bf16 without a mask, head size
  a multiple of 8 up to 256; memory-efficient for a head size that is a multiple
  of 8 (4 in fp32); else math.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_SDPA = torch._C._nn.scaled_dot_product_attention
_FLASH = int(torch.nn.attention.SDPBackend.FLASH_ATTENTION)


def kernel_family(device: str, mode: str) -> str:
    """What the trace key holds: 'math', the device whose choice is traced ('cpu', 'cuda'),
    or ('cpu:fused') its fused kernel wherever one takes the call."""
    return "math" if mode == "math" else device if mode == "auto" else f"{device}:fused"


def _arguments(args: tuple, kwargs: dict) -> tuple:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale",
             "enable_gqa")
    defaults = (None, None, None, None, 0.0, False, None, False)
    bound = dict(zip(names, defaults)) | dict(zip(names, args)) | kwargs
    return tuple(bound[n] for n in names)


def _cpu_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
               dropout_p: float, is_causal: bool, scale: float | None, gqa: bool) -> bool:
    """PyTorch's own CPU choice, asked on batch-1 CPU tensors of the call's other sizes."""
    if q.dim() != 4 or any(t.stride(-1) != 1 for t in (q, k, v)):
        return False

    def small(t: torch.Tensor) -> torch.Tensor:
        return torch.zeros((1, *t.shape[1:]), dtype=t.dtype).requires_grad_(t.requires_grad)

    m = None if mask is None else torch.zeros((min(mask.shape[0], 1), *mask.shape[1:])
                                              if mask.dim() == 4 else mask.shape, dtype=mask.dtype)
    try:
        choice = torch._fused_sdp_choice(small(q), small(k), small(v), m, dropout_p, is_causal,
                                         scale=scale, enable_gqa=gqa)
    except RuntimeError:
        return False
    return int(choice) == _FLASH


def _cuda_kernel(q: torch.Tensor, mask: torch.Tensor | None) -> str:
    head = q.shape[-1]
    if q.dim() != 4:
        return "math"
    if q.dtype in (torch.float16, torch.bfloat16) and mask is None and head % 8 == 0 \
            and head <= 256:
        return "flash"
    if head % (4 if q.dtype == torch.float32 else 8) == 0:
        return "efficient"
    return "math"


class _Route:
    """``scaled_dot_product_attention`` on the kernel ``device`` would run (``forced``: its
    fused kernel wherever one takes the call's shapes)."""

    def __init__(self, device: str, forced: bool = False) -> None:
        self.device, self.forced = device, forced

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        q, k, v, mask, dropout_p, causal, scale, gqa = _arguments(args, kwargs)
        aten = torch.ops.aten
        if self.device == "cpu" and not gqa and q.dim() == 4 and (
                self.forced or _cpu_flash(q, k, v, mask, dropout_p, causal, scale, gqa)):
            return aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, dropout_p, causal, attn_mask=mask, scale=scale)[0]
        if self.device == "cuda" and not gqa:
            chosen = _cuda_kernel(q, mask)
            if chosen == "flash":
                return aten._scaled_dot_product_flash_attention(
                    q, k, v, dropout_p, causal, False, scale=scale)[0]
            if chosen == "efficient":
                needs = any(t.requires_grad for t in (q, k, v))
                return aten._scaled_dot_product_efficient_attention(
                    q, k, v, mask, needs, dropout_p, causal, scale=scale)[0]
        return _SDPA(*args, **kwargs)


@contextlib.contextmanager
def route(family: str) -> Iterator[None]:
    """Attention on ``family``'s kernels while tracing ('math': leave it to meta).

    ``torch.nn.functional.scaled_dot_product_attention`` is replaced for the trace (what
    ``nn.MultiheadAttention`` and most models call); a torch-function mode cannot do it,
    as ``multi_head_attention_forward`` runs with modes off."""
    if family == "math":
        yield
        return
    device, _, forced = family.partition(":")
    functional = torch.nn.functional
    saved = functional.scaled_dot_product_attention
    functional.scaled_dot_product_attention = _Route(device, forced == "fused")
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = saved
