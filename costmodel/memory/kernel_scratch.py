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
  depthwise or 8-channels-a-group one does not), then the weight gradient: ``+in +out
  +w_blocked -in -out +w -w_blocked``, with the scratchpad of oneDNN's pointwise kernel
  where it splits its reduction (:mod:`~costmodel.memory.onednn_conv`); where oneDNN's
  ``gemm:jit`` computes the weight gradient (an output smaller than its kernel, a patch
  embedding, a depthwise kernel its ``jit_dw`` does not take: over 3 wide, or an input
  smaller than the kernel needs) no activation is reordered, and a reduction buffer and
  an unfolded image per thread are booked instead;
* batch norm backward: one input-sized temporary after its outputs;
* the CPU flash attention's backward: one more output-sized buffer (the query's gradient
  accumulated in float) beside its three gradients.

The thread count is this process's (``torch.get_num_threads()``, part of a plan's key
and of an estimate's cache key): ``gemm:jit`` books its buffers per thread where it
threads over images and groups, and the pointwise kernel a copy of its weight blocks
per thread where it splits its reduction (both from oneDNN's code, measured at 1 to 4
threads); the nhwc rules hold at 1 and 2.

Which kernel runs is ATen's choice first (``use_mkldnn``): a dense 1x1 at stride 1 with
fewer than 16 images on one thread, and one small image through a small dense kernel,
run on ATen's own kernel, which reorders nothing and unfolds the image (im2col) over
the op instead.  Those alternatives hold at the batches where their kernel runs
(:class:`AtBatch`).

Each rule gives the alternatives, over the op-level state just after the op's
outputs exist; the peak with scratch is the highest of them, checkpoint by
checkpoint.  What is left out, and so under-predicted: the other scratchpads of
oneDNN's kernels (a strided convolution's input gradient holds 12 KB and a few tens of
KB per thread), other kernels' buffers, oneDNN's AVX-512 and AMX kernels (these rules
are AVX2's), and any other CPU backend (ARM's, a Raspberry Pi's).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from costmodel.memory import onednn_conv
from costmodel.trace.records import ZERO, Lin, add, at, scale


@dataclass(frozen=True)
class NativePath:
    """When ATen runs a convolution on its own kernel rather than oneDNN's
    (:func:`~costmodel.trace.kernel_tags.native_path`): it then reorders nothing, and
    unfolds the image (im2col) where the kernel is not a plain 1x1."""

    plain_1x1: bool
    small_image: bool
    unfolded_bytes: int

    def onednn(self, images: int, threads: int) -> bool:
        return ((not self.plain_1x1 or images >= 16 or threads > 1)
                and (not self.small_image or images > 1))

    def may_switch(self, threads: int) -> bool:
        """Whether some batch runs it on ATen's kernel at this thread count."""
        return self.small_image or (self.plain_1x1 and threads == 1)


@dataclass(frozen=True)
class AtBatch:
    """An alternative that is not affine in the batch: one that holds only where a
    convolution runs on oneDNN (or only where it runs on ATen's own kernel), or only for
    one image or more (``gemm:jit``'s threading), or that adds the scratchpad oneDNN's
    pointwise weight gradient books (:mod:`~costmodel.memory.onednn_conv`): each depends
    on the images the convolution sees and on the thread count."""

    base: Lin
    x: Lin
    """The convolution's input, bytes: its images are ``x`` over ``image_bytes``."""
    image_bytes: int
    threads: int
    path: NativePath | None = None
    on_onednn: bool = True
    """Holds where oneDNN runs the convolution (else where ATen's kernel does)."""
    pointwise: tuple[int, int, int, bool, bool] | None = None
    """(input channels, output channels, output pixels, strided, bias): plus the scratchpad."""
    images: tuple[int, int | None] | None = None
    """Holds only for this many images, (least, most or ``None``)."""

    def bytes_at(self, batch: int, replay: int) -> int | None:
        """Bytes over the checkpoint at (batch, replay); ``None`` where it does not hold."""
        images = at(self.x, batch, replay) // self.image_bytes
        if self.path is not None and self.path.onednn(images, self.threads) != self.on_onednn:
            return None
        if self.images is not None and not (
                self.images[0] <= images and (self.images[1] is None or images <= self.images[1])):
            return None
        extra = _pointwise(*self.pointwise[:3], images, *self.pointwise[3:], self.threads) \
            if self.pointwise else 0
        return at(self.base, batch, replay) + extra


_pointwise = lru_cache(maxsize=4096)(onednn_conv.pointwise_weight_scratch)


def _native(parts: list[str]) -> tuple[NativePath | None, int]:
    """A tag's :class:`NativePath` and image elements (``None``, 0: oneDNN's always)."""
    small = next((int(p[len("smallimage"):]) for p in parts if p.startswith("smallimage")), None)
    image = next((int(p[len("image"):]) for p in parts if p.startswith("image")), 0)
    if small is None and "plain1x1" not in parts:
        return None, 0
    return NativePath("plain1x1" in parts, small is not None, small or 0), image


def _gated(alternatives: list[Lin | AtBatch], parts: list[str], x: Lin,
           threads: int) -> list[Lin | AtBatch]:
    """oneDNN's alternatives, and ATen's kernel's (its unfolded image over the op), each
    holding at the batches its kernel runs; as they are where no batch changes the kernel."""
    path, image = _native(parts)
    if path is None or not path.may_switch(threads):
        return alternatives
    out: list[Lin | AtBatch] = [
        replace(a, path=path) if isinstance(a, AtBatch) else
        AtBatch(a, x, 4 * image, threads, path) for a in alternatives]
    if path.unfolded_bytes:
        out.append(AtBatch((path.unfolded_bytes, 0, 0), x, 4 * image, threads, path,
                           on_onednn=False))
    return out


def sub(a: Lin, b: Lin) -> Lin:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def conv_forward(x: Lin, w: Lin, out: Lin, plain_input: bool) -> list[Lin]:
    """Over the output: the reordered input and weight beside the blocked output, or the
    blocked output beside the plain one."""
    return [w if plain_input else add(x, w), out]


def conv_forward_op(kernel: str, x: Lin, w: Lin, out: Lin, plain_input: bool,
                    threads: int = 2) -> list[Lin | AtBatch]:
    """:func:`conv_forward` for a traced op's ``kernel``
    (:attr:`~costmodel.trace.records.OpFact.kernel`); where ATen's own kernel runs it, its
    unfolded image over the output instead."""
    parts = kernel.split(":")
    return _gated(conv_forward(x, w, out, plain_input), parts, x, threads)


@dataclass(frozen=True)
class ConvKind:
    """What a convolution's backward scratch depends on beyond sizes, read from its tag
    (:func:`costmodel.trace.kernel_tags.node`)."""

    strided: bool = False
    depthwise: int = 0
    """The kernel side of a depthwise convolution (0: not one)."""
    nhwc: bool = False
    patch: bool = False
    group8: bool = False
    gemm: tuple[int, int, int, int] | None = None
    """(unfolded floats a thread, output pixels, groups, image elements): oneDNN's
    ``gemm:jit`` weight gradient (:func:`~costmodel.memory.onednn_conv.gemm_weight_scratch`)."""
    pointwise: tuple[int, int, int, int, bool] | None = None
    """(input channels, output channels, input pixels, output pixels, bias):
    ``jit_1x1:avx2``'s weight gradient (:func:`~costmodel.memory.onednn_conv.pointwise_weight_scratch`)."""

    @staticmethod
    def parse(parts: list[str]) -> "ConvKind":
        def sizes(prefix: str) -> tuple[int, ...] | None:
            found = next((p[len(prefix):] for p in parts if p.startswith(prefix)), None)
            return tuple(int(v) for v in found.split("x")) if found else None

        pointwise = sizes("pointwise")
        return ConvKind("strided" in parts, (sizes("depthwise") or (0,))[0], "nhwc" in parts,
                        "patch" in parts, "group8" in parts, sizes("gemm"),  # type: ignore[arg-type]
                        (*pointwise, "bias" in parts) if pointwise else None)


def conv_backward(x: Lin, w: Lin, out: Lin, kind: ConvKind, needs_input: bool,
                  needs_weight: bool, threads: int = 2) -> list[Lin | AtBatch]:
    """Over both gradients: the input gradient's phase, then the weight gradient's (with
    the input gradient already made).

    * A plain convolution reorders its operands (``+in +out +w_blocked``), and then holds
      the gradient beside its blocked copy; ``jit_1x1:avx2`` (``kind.pointwise``) also
      books a scratchpad there (:class:`AtBatch`).
    * ``gemm:jit`` (``kind.gemm``: an output smaller than its kernel, a ViT's patch
      embedding, a depthwise kernel over 3x3) reorders no activation; it books a
      reduction buffer and an unfolded image per thread beside the gradient (in a ViT
      the patch embedding's gradient also arrives through a permute and is copied: one
      output more).  Measured at 1 to 4 threads, 96,000 to 9,437,184-byte weights.
    * A strided convolution's input gradient holds a third input-sized buffer, unless it
      is depthwise or has 8 channels a group (``kind.group8``, RegNet's: oneDNN's
      ``jit:avx2`` runs it; 16 and 32 channels a group hold it).
    * An input already in oneDNN's channels-last layout (``kind.nhwc``, ConvNeXt's after a
      permute): no activation is reordered; the weight gradient holds three more weights
      (65 for a 7x7 depthwise kernel), whatever the batch, map or thread count (measured
      for 2x2/2, 3x3/1, 3x3/2 and 7x7 depthwise at 7x7 to 56x56, 1 and 2 threads).  Its
      input gradient alone (a frozen weight) is not measured: one reordered weight.
    """
    if kind.nhwc and (not kind.depthwise or kind.depthwise == 7):  # over the gradients made
        return [scale(w, 65 if kind.depthwise else 3) if needs_weight else w]
    made = add(scale(x, needs_input), scale(w, needs_weight))
    out_: list[Lin | AtBatch] = []
    if needs_input:
        third = kind.strided and not kind.depthwise and not kind.group8
        out_ += [sub(add(add(out, w), x), made), sub(scale(x, 3 if third else 2), made)]
    if needs_weight:
        before = x if needs_input else ZERO
        if kind.gemm is not None:
            held = sub(add(add(before, out) if kind.patch else before, w), made)
            out_ += _gemm(held, x, w[0], kind.gemm, threads)
        elif kind.pointwise is not None:
            ic, oc, in_pixels, out_pixels, bias = kind.pointwise
            out_.append(AtBatch(sub(add(before, add(add(x, out), w)), made), x,
                                4 * ic * in_pixels, threads,
                                pointwise=(ic, oc, out_pixels, kind.strided, bias)))
        else:
            out_.append(sub(add(before, add(add(x, out), w)), made))
        out_.append(sub(add(before, scale(w, 2)), made))
    return out_


def _gemm(held: Lin, x: Lin, weight_bytes: int, gemm: tuple[int, int, int, int],
          threads: int) -> list[Lin | AtBatch]:
    """``held`` plus ``gemm:jit``'s scratchpad: one alternative, or one for a single image
    and one for more where the scratchpad differs."""
    unfolded, pixels, groups, image = gemm

    def scratch(images: int) -> Lin:
        return add(held, (onednn_conv.gemm_weight_scratch(weight_bytes, unfolded, pixels,
                                                            groups, images, threads), 0, 0))

    if scratch(1) == scratch(2):  # as many threads for one image as for more
        return [scratch(2)]
    return [AtBatch(scratch(1), x, 4 * image, threads, images=(1, 1)),
            AtBatch(scratch(2), x, 4 * image, threads, images=(2, None))]


def conv_backward_node(kernel: str, x: Lin, w: Lin, out: Lin, needs_input: bool,
                       needs_weight: bool, threads: int = 2) -> list[Lin | AtBatch]:
    """:func:`conv_backward` for a traced node's ``kernel``
    (:attr:`~costmodel.trace.records.NodeFact.kernel`: 'conv' and ':strided',
    ':depthwiseK', ':nhwc', ':patch', ':group8', ':gemmUxPxGxI', ':pointwiseIxOxPxQ',
    ':bias', ':transposed', and ATen's own path, ':plain1x1', ':smallimageN', ':imageN'),
    each alternative holding at the batches its kernel runs; a transposed convolution
    has no rule."""
    parts = kernel.split(":")
    if parts[0] != "conv" or "transposed" in parts:
        return []
    return _gated(conv_backward(x, w, out, ConvKind.parse(parts), needs_input, needs_weight,
                                threads), parts, x, threads)


def batch_norm_backward(x: Lin, needs_input: bool) -> list[Lin]:
    return [x] if needs_input else []


def flash_attention_backward(out: Lin) -> list[Lin]:
    """The CPU flash kernel's backward accumulates the query's gradient in one more
    output-sized buffer (and small per-thread blocks, left out)."""
    return [out]


FORWARD_OPS = ("aten.convolution.default",)
BACKWARD_NODES = ("ConvolutionBackward0", "NativeBatchNormBackward0",
                  "ScaledDotProductFlashAttentionForCpuBackward0")
