"""What the CPU's kernels allocate and free inside one op: oneDNN's reorders.

costcl's timeline counts at the level of ops (what an op hands back); the CPU
allocator also hands out buffers that live only inside an op.  On x86, PyTorch's
oneDNN convolution reorders its operands to blocked layouts and back; torch.profiler's
memory events show the sequence (benchmarks/trainable_sets.py prints the effect).
Measured on this machine's torch 2.14 (oneDNN, x86-64), per op, as a rule each:

* convolution forward: ``+in +w +out_blocked -w -in +out -out_blocked``: over the
  op's output, ``in + w`` (``w`` alone when the input keeps its plain layout, a
  3-channel image) or one more output;
* convolution backward, input gradient first: ``+out +w +in_blocked ... -w -out
  +in -in_blocked`` (a strided convolution holds one more input-sized buffer, a strided
  depthwise one does not), then the weight gradient: ``+in +out +w_blocked -in -out +w
  -w_blocked`` (a strided depthwise convolution with a kernel over 3x3 reorders neither
  activation: MobileNetV3's and MnasNet's 5x5s);
* batch norm backward: one input-sized temporary after its outputs;
* the CPU flash attention's backward: one more output-sized buffer (the query's gradient
  accumulated in float) beside its three gradients.

The rules were read with two threads, this machine's default.  Most do not depend on
the thread count (the nhwc ones were checked at 1 and 2); the weight-gradient reduction
of an output smaller than its kernel does: four weights (and about 1 KB, or 144 bytes per
output channel for a dense kernel) per thread, so the eight weights below assume two.

Each rule gives the alternatives, over the op-level state just after the op's
outputs exist; the peak with scratch is the highest of them, checkpoint by
checkpoint.  What is left out, and so under-predicted: oneDNN's scratchpads (a
tenth of the input in a strided or 1x1 convolution), other kernels' buffers, and any
other CPU backend (ARM's, a Raspberry Pi's).
"""
from __future__ import annotations

from costmodel.trace.records import ZERO, Lin, add, scale


def sub(a: Lin, b: Lin) -> Lin:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def conv_forward(x: Lin, w: Lin, out: Lin, plain_input: bool) -> list[Lin]:
    """Over the output: the reordered input and weight beside the blocked output, or the
    blocked output beside the plain one."""
    return [w if plain_input else add(x, w), out]


def conv_backward(x: Lin, w: Lin, out: Lin, strided: bool, needs_input: bool,
                  needs_weight: bool, small_channels: int = 0, patch: bool = False,
                  depthwise: int = 0, nhwc: bool = False) -> list[Lin]:
    """Over both gradients: the input gradient's phase, then the weight gradient's (with
    the input gradient already made).  ``small_channels``: the output channels of a
    convolution whose output is smaller than its kernel at stride 1, or a depthwise one's
    at any stride (a CIFAR ResNet's last stage at 64x64, MnasNet's last 5x5s at 96x96; 0:
    not one): the weight gradient is reduced over a buffer of
    eight weights and 288 bytes per output channel, with no operand reordered (a depthwise
    one: eight weights and 2 KB; measured at 5x5 on 3x3 and 4x4 maps, 3x3 on 2x2).
    ``patch``: a patch embedding (an image cut into kernel-sized patches, a ViT's first
    layer): the same reduction over eight weights and a copy of one image per thread,
    whatever the batch (20,078,848 bytes for ViT-B/16's at batches 2 and 4, alone), and
    in a ViT a copy of its gradient, which reaches it through a permute (an output).
    ``depthwise``: the kernel side of a depthwise convolution (0: not one).
    ``nhwc``: an input already in oneDNN's channels-last layout (ConvNeXt's, after a
    permute): no activation is reordered; the weight gradient holds three more weights
    (65 for a 7x7 depthwise kernel), whatever the batch, map or thread count (measured
    for 2x2/2, 3x3/1, 3x3/2 and 7x7 depthwise at 7x7 to 56x56, 1 and 2 threads).  Its
    input gradient alone (a frozen weight) is not measured: one reordered weight."""
    if nhwc and (not depthwise or depthwise == 7):  # already over the gradients made
        return [scale(w, 65 if depthwise else 3) if needs_weight else w]
    made = add(scale(x, needs_input), scale(w, needs_weight))
    peaks: list[Lin] = []
    if needs_input:
        peaks += [add(add(out, w), x), scale(x, 3 if strided and not depthwise else 2)]
    if needs_weight:
        before = x if needs_input else ZERO
        if patch:  # two threads, each with a copy of one sample's image
            peaks.append(add(add(before, out),
                             add(scale(w, 9), (2 * (x[1] + x[2]) + 256, 0, 0))))
        elif small_channels and depthwise:  # eight weights and 2 KB, whatever the channels
            peaks.append(add(before, add(scale(w, 9), (2048, 0, 0))))
        elif small_channels:
            peaks.append(add(before, add(scale(w, 9), (288 * small_channels + 256, 0, 0))))
        elif strided and depthwise > 3:
            peaks.append(add(before, scale(w, 2)))
        else:
            peaks += [add(before, add(add(x, out), w)), add(before, scale(w, 2))]
    return [sub(p, made) for p in peaks]


def conv_backward_node(kernel: str, x: Lin, w: Lin, out: Lin, needs_input: bool,
                       needs_weight: bool) -> list[Lin]:
    """:func:`conv_backward` for a traced node's ``kernel`` ('conv', ':strided',
    ':smallC', ':patch', ':depthwiseK', ':nhwc', ':transposed', :attr:`~costmodel.trace.records.NodeFact.kernel`);
    a transposed convolution has no rule."""
    parts = kernel.split(":")
    if parts[0] != "conv" or "transposed" in parts:
        return []
    small = next((int(p[len("small"):]) for p in parts if p.startswith("small")), 0)
    depthwise = next((int(p[len("depthwise"):]) for p in parts if p.startswith("depthwise")), 0)
    return conv_backward(x, w, out, "strided" in parts, needs_input, needs_weight, small,
                         "patch" in parts, depthwise, "nhwc" in parts)


def batch_norm_backward(x: Lin, needs_input: bool) -> list[Lin]:
    return [x] if needs_input else []


def flash_attention_backward(out: Lin) -> list[Lin]:
    """The CPU flash kernel's backward accumulates the query's gradient in one more
    output-sized buffer (and small per-thread blocks, left out)."""
    return [out]


FORWARD_OPS = ("aten.convolution.default",)
BACKWARD_NODES = ("ConvolutionBackward0", "NativeBatchNormBackward0",
                  "ScaledDotProductFlashAttentionForCpuBackward0")
