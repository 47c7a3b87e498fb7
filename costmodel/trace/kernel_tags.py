"""What the CPU kernels' scratch depends on beyond sizes: a tag per traced op and node.

The trace runs on the meta device, where no kernel is chosen; these tags keep what the
CPU's choice and its buffers depend on (:mod:`costmodel.memory.kernel_scratch` reads
them): a convolution's shape classes for oneDNN's reorders, its pointwise sizes for
oneDNN's weight-gradient scratchpad, whether ATen would run it on its own kernel
instead, and an LSTM layer's sizes.
"""
from __future__ import annotations

from math import prod

import torch

from costmodel.memory import onednn_conv
from costmodel.trace import recurrent


def node(node: torch.autograd.graph.Node, name: str) -> str:
    """An autograd node's tag (:attr:`~costmodel.trace.records.NodeFact.kernel`)."""
    if name == "MkldnnRnnLayerBackward0":  # lstm:steps:features:hidden[:copy]
        steps, _, features = node._saved_input.shape
        copies = node._sequence_nr() in recurrent.COPIES_GRAD
        return f"lstm:{steps}:{features}:{node._saved_hidden_size}" + (":copy" if copies else "")
    if name != "ConvolutionBackward0":
        return ""
    stride = tuple(node._saved_stride)
    strided = any(v != 1 for v in stride)
    weight = node._saved_weight.shape
    depthwise = node._saved_groups > 1 and weight[1] == 1
    x = node._saved_input
    nhwc = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and \
        not x.is_contiguous()  # oneDNN's own layout (ConvNeXt's maps, after a permute)
    out = node._input_metadata[0].shape[2:]
    below = any(o < k for o, k in zip(out, weight[2:]))  # an output smaller than the kernel
    small = below and (not strided or depthwise)  # a depthwise one: strided or not
    patch = (strided and weight[1] < 8 and not depthwise  # a ViT's patch embedding
             and (below or (stride == tuple(weight[2:]) and min(stride) >= 8)))
    pointwise = (node._saved_groups == 1 and not node._saved_transposed and x.dim() == 4
                 and not nhwc
                 and tuple(weight[2:]) == (1, 1) and not any(node._saved_padding)
                 and onednn_conv.pointwise_applies(stride, tuple(x.shape[2:]), tuple(out)))
    simd_groups = node._saved_groups > 1 and weight[1] == 8  # oneDNN's jit:avx2 grouped kernel
    # oneDNN's gemm:jit weight gradient: (unfolded floats a thread, pixels, groups, image)
    gemm = not nhwc and (depthwise and not _jit_dw_applies(
        tuple(x.shape[2:]), tuple(weight[2:]), stride, tuple(node._saved_padding), tuple(out))
        or not depthwise and (small or patch))
    pixels = prod(tuple(out))
    return ("conv" + (":strided" if strided else "")
            + (f":gemm{weight[1] * prod(tuple(weight[2:])) * pixels}x{pixels}"
               f"x{node._saved_groups}x{prod(tuple(x.shape[1:]))}" if gemm else "")
            + (":group8" if simd_groups else "")
            + (":patch" if patch else "") + (f":depthwise{max(weight[2:])}" if depthwise else "")
            + (":nhwc" if nhwc else "") + (":transposed" if node._saved_transposed else "")
            + (f":pointwise{weight[1]}x{weight[0]}x{x.shape[2] * x.shape[3]}x{out[0] * out[1]}"
               if pointwise else "")
            + (":bias" if pointwise and any(node._saved_bias_sym_sizes_opt) else "")
            + native_path(tuple(x.shape), tuple(weight), tuple(out), stride,
                          tuple(node._saved_padding), tuple(node._saved_dilation),
                          node._saved_groups, node._saved_transposed))


def _jit_dw_applies(x: tuple[int, ...], k: tuple[int, ...], stride: tuple[int, ...],
                    padding: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """Whether oneDNN's ``jit_dw`` takes a 2-D depthwise weight gradient
    (``jit_uni_dw_conv_bwd_weights_kernel_t::init_conf``,
    src/cpu/x64/jit_uni_dw_conv_kernel_utils.cpp at v3.12): a kernel of at most 3 wide, no
    gaps, paddings of at most half the kernel (over 1 only in multiples of the stride),
    and an input that holds the kernel; ``gemm:jit`` runs the others."""
    if len(k) != 2:
        return False
    (ih, iw), (kh, kw), (sh, sw), (pt, pl) = x, k, stride, padding
    pb = (out[0] - 1) * sh + kh - ih - pt
    pr = (out[1] - 1) * sw + kw - iw - pl
    return (kw <= 3 and sw <= kw and max(pt, pb) <= kh // 2 and max(pl, pr) <= kw // 2
            and ih >= kh + (-pt) % sh and (pt <= 1 or pt % sh == 0)
            and (pb <= 1 or pb % sh == 0))


def convolution(args: tuple) -> str:
    """A forward convolution's tag (:attr:`~costmodel.trace.records.OpFact.kernel`), from
    ``aten.convolution``'s arguments."""
    x, w, _, stride, padding, dilation, transposed, _, groups = args[:9]
    spatial = x.dim() - 2
    out = tuple((x.shape[2 + d] + 2 * padding[d] - dilation[d] * (w.shape[2 + d] - 1) - 1)
                // stride[d] + 1 for d in range(spatial)) if not transposed else ()
    return "conv" + native_path(tuple(x.shape), tuple(w.shape), out, tuple(stride),
                                tuple(padding), tuple(dilation), groups, transposed)


def native_path(x: tuple[int, ...], w: tuple[int, ...], out: tuple[int, ...],
                stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
                groups: int, transposed: bool) -> str:
    """When ATen runs a float convolution on its own kernel rather than oneDNN's
    (``use_mkldnn``, aten/src/ATen/native/Convolution.cpp at torch 2.14): a dense 1x1 one at
    stride 1 with fewer than 16 images on one thread (':plain1x1'), or a dense one of one
    image whose first four dimensions hold at most 20,480 elements and whose kernel is 3
    or less on a side (':smallimageN', N: the bytes of the unfolded image that kernel
    fills, none for a 1x1 at stride 1 without padding); with either, ':imageN', the
    elements of one image (how many images a batch is)."""
    if transposed or len(x) < 3:
        return ""
    x4 = (x[0], x[1], 1, x[2]) if len(x) == 3 else x  # a 1-D one runs as 2-D
    kh, kw = (w[-2] if len(w) > 3 else 1), w[-1]
    strided, dilated = any(s != 1 for s in stride), any(d != 1 for d in dilation)
    plain = not strided and not dilated and kh == kw == 1
    small = groups == 1 and not (kh > 3 and kw > 3) and x4[1] * x4[2] * x4[3] <= 20480
    unfolded = 0 if plain and not any(padding) else \
        4 * x[1] * prod(w[2:]) * prod(out)
    if not (plain or small):
        return ""
    return ((":plain1x1" if plain else "") + (f":smallimage{unfolded}" if small else "")
            + f":image{prod(x[1:])}")

