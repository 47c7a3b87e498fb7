"""Inputs a model runs on but was not built for.

A CIFAR ResNet runs on a 3x1x1 input: padding keeps every 3x3 convolution
legal, and the costs come out, describing a network that convolves padding.
Nothing fails, so the estimate says so in a note instead: the convolutions
whose input is smaller than their kernel.
"""
from __future__ import annotations

from torch import nn

from costmodel.trace.records import StepTrace


def undersized_convolutions(trace: StepTrace, network: nn.Module) -> list[tuple[str, tuple, tuple]]:
    """(layer, input spatial size, kernel) of each convolution (1-D, 2-D or 3-D) whose input
    is smaller than its kernel: the sizes after batch and channels, whatever the rank."""
    out = []
    for name, (shape_in, _) in trace.module_shapes.items():
        try:
            mod = network.get_submodule(name)
        except AttributeError:
            continue
        if not isinstance(mod, nn.modules.conv._ConvNd) or len(shape_in) < 3:
            continue
        spatial = tuple(d[0] for d in shape_in[2:])
        kernel = tuple(mod.kernel_size)
        if len(spatial) == len(kernel) and any(s < k for s, k in zip(spatial, kernel)):
            out.append((name, spatial, kernel))
    return out


def small_input_note(trace: StepTrace, network: nn.Module) -> str | None:
    """A note for the estimate when the input is too small for the model's convolutions."""
    small = undersized_convolutions(trace, network)
    if not small:
        return None
    name, spatial, kernel = small[0]
    shape = "x".join(map(str, trace.input_shape))
    return (f"input {shape}: {len(small)} convolution(s) see an input smaller than their kernel "
            f"(first: {name}, {'x'.join(map(str, spatial))} under a {'x'.join(map(str, kernel))} "
            "kernel), so they mostly convolve padding; check --input-size against what the "
            "model was built for")


_RECURRENT = ("LSTM", "GRU", "RNN")


def recurrent_note(trace: StepTrace, device: str) -> str | None:
    """Which kernel recurrent layers are costed on: say so.

    On the CPU, PyTorch runs an LSTM as one oneDNN kernel per layer and direction, and the
    trace does too (:mod:`costmodel.trace.recurrent`; a one-layer LSTM at batch 8 was 49%
    under the measured peak when it was costed unrolled, and is now exact).  GRUs and plain
    RNNs have no oneDNN path; they are costed as meta runs their cell, which does not match
    the CPU's plain run yet (measured on a one-layer GRU).  On CUDA, cuDNN's RNN
    kernels run, which costcl does not model: it costs the cell unrolled, a lower bound."""
    found = sorted({m.type for m in trace.modules if m.type in _RECURRENT})
    if not found:
        return None
    if device == "cpu":
        notes = []
        if trace.has_onednn_lstm:
            notes.append("LSTM layers are costed on the CPU's oneDNN kernel, as PyTorch runs "
                         "them (one mkldnn_rnn_layer per layer and direction: its workspace "
                         "and scratch as oneDNN sizes them; FLOPs its GEMMs, every gradient "
                         "in backward)")
        elif "LSTM" in found:
            notes.append("LSTM layers are costed as their cell unrolled, as PyTorch runs one "
                         "with a projection or a packed sequence on the CPU; a bfloat16 one "
                         "runs on oneDNN, which costcl models in float32 only")
        others = [t for t in found if t != "LSTM"]
        if others:
            notes.append(f"{', '.join(others)} layers are costed as their cell unrolled on "
                         "meta tensors; the CPU's own cell kernels are not matched yet (a "
                         "one-layer GRU at batch 8: +19% op level, -2.8% with kernel scratch)")
        return "; ".join(notes) or None
    return (f"{', '.join(found)} layers are costed as their cell unrolled step by step (as on "
            f"meta tensors; FLOPs as FlopCounterMode counts that path); on {device} PyTorch "
            "runs cuDNN's RNN kernels, whose workspace costcl does not model: memory is a "
            "lower bound")


def cuda_workspace_note(device: str) -> str | None:
    """What a CUDA prediction assumes about library workspaces, named rather than hidden.

    PyTorch allocates cuBLAS's workspace through the caching allocator at a handle's
    first matrix product on a stream (``getNewWorkspace``; ``CUBLAS_WORKSPACE_CONFIG``,
    by default a few MiB, more on Hopper) and cuDNN's per convolution algorithm; both
    count in ``max_memory_allocated``.  Neither has been measured against costcl yet."""
    if device != "cuda":
        return None
    return ("cuda: the prediction includes no cuBLAS workspace (PyTorch allocates it at the "
            "first matrix product, per handle and stream; CUBLAS_WORKSPACE_CONFIG sets it) "
            "and no cuDNN convolution workspace (the algorithm's own)")
