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
    """Recurrent layers are traced as meta runs them, not as the device does: say so.

    On meta, ``nn.LSTM`` runs its cell step by step (addmm, sigmoid, tanh per time step);
    on the CPU PyTorch runs one oneDNN kernel per layer (``mkldnn_rnn_layer``) that keeps a
    workspace for backward whose size is oneDNN's own and not affine in the batch, and on
    CUDA cuDNN's.  Measured: a one-layer LSTM (16 to 32, 50 steps) at batch 8 peaks at
    1,055,704 bytes on the CPU against 540,632 predicted."""
    found = sorted({m.type for m in trace.modules if m.type in _RECURRENT})
    if not found:
        return None
    kernel = "one oneDNN kernel per layer" if device == "cpu" else "cuDNN's RNN kernels"
    return (f"{', '.join(found)} layers are costed as their cell unrolled step by step (as on "
            f"meta tensors; FLOPs as FlopCounterMode counts that path); on {device} PyTorch "
            f"runs {kernel}, whose workspace costcl does not model: memory is a lower bound "
            "(a one-layer LSTM at batch 8: 49% under the CPU's measured peak)")


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
