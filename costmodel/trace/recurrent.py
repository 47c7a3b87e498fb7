"""LSTMs traced on the kernel the CPU runs, not on meta's unrolled cell.

``nn.LSTM`` calls ``torch._VF.lstm``.  On meta tensors that unrolls the cell (a matrix
product, sigmoids and tanhs per time step, each step's gates kept for backward).  On
the CPU, PyTorch runs oneDNN instead (``at::native::lstm`` -> ``use_mkldnn`` ->
``mkldnn_rnn``, aten/src/ATen/native/mkldnn/RNN.cpp): one ``mkldnn_rnn_layer`` per
layer and direction, which keeps its input, weights, states and outputs plus one
workspace (the gates and states of every step, and room for the backward's diff
states) for backward.  The trace calls the same ops as ``mkldnn_rnn`` does, in the
same order, so the graph, the saved tensors and the FLOPs are the CPU's; the
workspace's size is oneDNN's (:mod:`costmodel.memory.onednn_rnn`), as the meta kernel
says 0 bytes.  GRUs and plain RNNs have no oneDNN path in PyTorch: they are traced as
meta runs their cell, which does not match the CPU's plain run yet (the estimate says so).

The route applies where ``use_mkldnn`` would (float32 tensors, oneDNN enabled, no
projection, a padded not packed sequence) and only for a CPU estimate; a CUDA
GPU runs cuDNN's kernel, which costcl does not model (the estimate says so).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from costmodel.memory import onednn_rnn

_LSTM = torch._VF.lstm
_LAYER = torch.ops.aten.mkldnn_rnn_layer.default
_MODE_LSTM = 2
"""ideep::rnn_kind::LSTM (third_party/ideep/include/ideep/abstract_types.hpp)."""

COPIES_GRAD: set[int] = set()
"""Sequence numbers of the layers whose output's gradient arrives as a strided view
(a batch-first LSTM's last layer, through the transpose; a bidirectional one's, through
the concatenation): their backward copies it to a contiguous tensor first."""


def kernel_family(device: str) -> str:
    """What the trace key holds: 'cpu' (oneDNN's LSTM), or 'unrolled' (meta's cell)."""
    return "cpu" if device == "cpu" else "unrolled"


def _usable(input: torch.Tensor, hx: object, params: object) -> bool:
    """``use_mkldnn`` (aten/src/ATen/native/RNN.cpp) for the tensors' dtype, and no
    projection; a packed sequence (``hx`` a tensor of batch sizes) takes the other overload."""
    if not isinstance(hx, (list, tuple)) or len(hx) != 2 or not torch._C._get_mkldnn_enabled():
        return False
    tensors = [input, *hx, *params]
    return (all(t.dtype == torch.float32 for t in tensors) and input.numel() > 0
            and hx[0].shape[2] == hx[1].shape[2])


def _mkldnn_rnn(input: torch.Tensor, hx: list[torch.Tensor], params: list[torch.Tensor],
                has_biases: bool, num_layers: int, dropout: float, train: bool,
                bidirectional: bool, batch_first: bool) -> tuple[torch.Tensor, ...]:
    """``mkldnn_rnn`` (aten/src/ATen/native/mkldnn/RNN.cpp), op for op."""
    x = (input.transpose(0, 1) if batch_first else input).contiguous()
    h, c = hx[0].contiguous(), hx[1].contiguous()
    per, dirs = (4 if has_biases else 2), (2 if bidirectional else 1)
    hidden = h.shape[2]
    layer_input = x
    hys: list[torch.Tensor] = []
    cys: list[torch.Tensor] = []
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            i = layer * dirs + d
            w = params[i * per:(i + 1) * per]
            b0 = w[2] if has_biases else torch.zeros(w[0].shape, dtype=w[0].dtype,
                                                     device=w[0].device)
            b1 = w[3] if has_biases else torch.zeros(w[1].shape, dtype=w[1].dtype,
                                                     device=w[1].device)
            out, hy, cy, _ = _LAYER(layer_input, w[0], w[1], b0, b1, h[i], c[i], d > 0, [],
                                    _MODE_LSTM, hidden, num_layers, has_biases, bidirectional,
                                    batch_first, train)
            if out.grad_fn is not None and (bidirectional or
                                            (batch_first and layer == num_layers - 1)):
                COPIES_GRAD.add(out.grad_fn._sequence_nr())
            outs.append(out)
            hys.append(hy)
            cys.append(cy)
        layer_input = outs[0] if dirs == 1 else torch.cat(outs, -1)
        if dropout and train and layer < num_layers - 1:
            layer_input = torch.dropout(layer_input, dropout, True)
    output = layer_input.transpose(0, 1) if batch_first else layer_input
    return output, torch.stack(hys, 0), torch.stack(cys, 0)


def _routed(*args: object) -> object:
    if len(args) == 9 and _usable(args[0], args[1], args[2]):  # type: ignore[arg-type]
        return _mkldnn_rnn(*args)  # type: ignore[arg-type]
    return _LSTM(*args)


def layer_outputs(args: tuple, out: tuple) -> tuple:
    """``mkldnn_rnn_layer``'s outputs with the workspace oneDNN really allocates (the meta
    kernel's is empty); none when grad is off (``forward_inference``)."""
    if not torch.is_grad_enabled():
        return out
    x = args[0]
    steps, batch, features = x.shape
    hidden = args[9]
    workspace = torch.empty(onednn_rnn.workspace_bytes(steps, batch, features, hidden),
                            dtype=torch.uint8, device=x.device)
    return (*out[:3], workspace)


@contextlib.contextmanager
def route(family: str) -> Iterator[None]:
    """LSTMs on ``family``'s kernel while tracing ('unrolled': leave them to meta).

    ``torch._VF.lstm`` is replaced for the trace (what ``nn.LSTM.forward`` calls)."""
    if family != "cpu":
        yield
        return
    COPIES_GRAD.clear()
    torch._VF.lstm = _routed
    try:
        yield
    finally:
        del torch._VF.lstm
