"""What oneDNN's x86 AVX2 convolutions book as scratchpad in a weight gradient.

A weight gradient is a reduction over the batch and the map.  When the kernel has
fewer independent pieces of work (blocks of the weight) than threads to keep busy,
oneDNN splits the reduction across threads, each accumulating a private copy of its
blocks, and sums the copies at the end: the scratchpad holds them.  Whether it splits,
and how, is ``reduce_balancer_t::balance`` (src/cpu/x64/cpu_reducer.cpp at
uxlfoundation/oneDNN 80afa71, the v3.12 that torch 2.14 ships), a brute force over
group sizes that depends on the thread count and on the batch; the copies' sizes
follow the kernel's blocking (``jit_avx2_1x1_conv_kernel_f32_t::init_conf``,
src/cpu/x64/jit_avx2_1x1_conv_kernel_f32.cpp) and the scratchpad registry's
alignment (src/common/memory_tracking.hpp: 128 bytes per entry, a page for the
barrier's context and a 1-D reducer's space).

Modelled: the pointwise (1x1) kernel ``jit_1x1:avx2`` that PyTorch's blocked
(``nChw8c``) layout selects for a dense 1x1 convolution at stride 1, or at a stride that
divides the map exactly (oneDNN first copies the strided pixels into a per-thread
buffer, the ``rtus`` space).  Checked against the sizes torch.profiler sees
(tests/test_onednn_conv.py).
"""
from __future__ import annotations

from dataclasses import dataclass

PAGE = 4096
_ALIGN = 128
"""memory_tracking's default alignment: every booked entry is given this much more."""
_FLOAT = 4
_SIMD = 8
"""AVX2's float lanes: channel blocks of 8."""
_BARRIER = PAGE
"""``simple_barrier::ctx_t`` is page-aligned: one page per group, booked page-aligned."""


def _div_up(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Balance:
    """``reduce_balancer_t`` after ``balance()``."""

    groups: int
    threads_per_group: int
    jobs_per_group: int


def balance(threads: int, job_size: int, jobs: int, reduction: int,
            max_buffer: int) -> Balance:
    """``reduce_balancer_t::balance`` (lock-free: threads may share a group)."""
    min_per_group = max(1, jobs // threads)
    max_per_group = max(1, max_buffer // (threads * job_size))
    groups = min(jobs // min_per_group, threads)
    per_group = min(threads // groups, reduction)
    jobs_ub = _div_up(jobs, groups)
    best = jobs * job_size * reduction
    for c in range(min_per_group, jobs):
        c_groups = min(jobs // c, threads)
        c_per_group = min(threads // c_groups, reduction)
        c_jobs_ub = _div_up(jobs, c_groups)
        if c_per_group > 1 and c_jobs_ub > max_per_group:
            continue
        cost = job_size * c_jobs_ub * (_div_up(reduction, c_per_group) + (c_per_group != 1))
        if cost < best:
            groups, per_group, jobs_ub, best = c_groups, c_per_group, c_jobs_ub, cost
    return Balance(groups, per_group, jobs_ub)


def _blocking(blocks: int, limit: int) -> int:
    """``init_conf``'s loop: divide by 2 or 3 while above ``limit``."""
    while blocks > limit:
        if blocks % 2 == 0:
            blocks //= 2
        elif blocks % 3 == 0:
            blocks //= 3
        else:
            break
    return blocks


def pointwise_applies(stride: tuple[int, ...], in_map: tuple[int, ...],
                      out_map: tuple[int, ...]) -> bool:
    """Whether ``jit_1x1:avx2`` takes a dense 1x1 convolution (no padding): at stride 1, or
    where the stride divides the map exactly (``rtus_prepare``)."""
    return all(s == 1 for s in stride) or all(o * s == i for o, s, i in
                                              zip(out_map, stride, in_map))


def pointwise_weight_scratch(in_channels: int, out_channels: int, out_pixels: int,
                             batch: int, strided: bool, bias: bool, threads: int) -> int:
    """Bytes of the scratchpad that ``jit_1x1:avx2``'s weight gradient books.

    ``out_pixels``: the output map's size (the reduced map when ``strided``)."""
    nb_ic, nb_oc = _div_up(in_channels, _SIMD), _div_up(out_channels, _SIMD)
    oc_blocking = _blocking(nb_oc, 32)
    ic_blocking = _blocking(nb_ic, 9)
    job_size = oc_blocking * ic_blocking * _SIMD * _SIMD
    jobs = _div_up(nb_oc, oc_blocking) * _div_up(nb_ic, ic_blocking)
    max_buffer = threads * job_size * 8
    total = 0
    if strided:  # rtus: each thread's copy of the strided pixels of its input blocks
        total += threads * ic_blocking * out_pixels * _SIMD * _FLOAT + _ALIGN
    if bias:
        if out_channels % _SIMD:  # the gradient of a padded bias
            total += nb_oc * _SIMD * _FLOAT + _ALIGN
        b = balance(threads, _SIMD, nb_oc, batch, max_buffer)
        if b.threads_per_group > 1:
            space = b.groups * (b.threads_per_group - 1) * b.jobs_per_group * _SIMD * _FLOAT
            total += space + PAGE + b.groups * _BARRIER + _BARRIER
    w = balance(threads, job_size, jobs, batch * out_pixels, max_buffer)
    if w.threads_per_group > 1:
        space = w.groups * w.threads_per_group * w.jobs_per_group * job_size * _FLOAT
        total += space + _ALIGN + w.groups * _BARRIER + _BARRIER
    return total


def gemm_weight_scratch(weight_bytes: int, unfolded: int, out_pixels: int, groups: int,
                        images: int, threads: int) -> int:
    """Bytes of the scratchpad that the ``gemm:jit`` weight gradient books (plain layout:
    ``init_conf`` in src/cpu/gemm_convolution_utils.cpp): a reduction buffer per thread,
    booked as floats by the weight's byte count (four weights' bytes), and an unfolded
    image per thread (``unfolded`` floats: input channels of a group x kernel x output
    pixels).  It threads over images and groups ("outer threading") where a thread has
    fewer than 256 output pixels and there is more than one image or more than two
    groups; one thread's buffers otherwise.  oneDNN runs it for the weight gradients of
    small outputs, patch embeddings and depthwise kernels over 3x3 (measured)."""
    n = threads if out_pixels // threads < 256 and (images != 1 or groups > 2) else 1
    return 4 * n * weight_bytes + _ALIGN + (n * unfolded * _FLOAT + _ALIGN if unfolded else 0)

