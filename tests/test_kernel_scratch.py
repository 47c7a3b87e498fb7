"""The CPU kernels' own buffers (oneDNN's reorders), predicted and measured.

torch.profiler's memory events on the plain run show what the CPU allocator hands out
inside an op; :mod:`costmodel.memory.kernel_scratch` gives each convolution and batch
norm its sequence.  The rules were read off this machine's torch 2.14 (oneDNN on
x86-64); another backend (ARM's) reorders otherwise, so these tests run on x86 only.
"""
from __future__ import annotations

import platform

import pytest

from costmodel import methods
from costmodel.estimation import estimate
from costmodel.memory import kernel_scratch as ks
from costmodel.trace.records import at
from costmodel.scenario import Scenario
from lightcl.validate import measure_cpu_plain_peak
from tests.conftest import torch_threads

x86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                         reason="the rules describe oneDNN on x86-64")


def test_a_stride_one_convolution_backward_holds_two_more_activations():
    """Measured for a 64-channel 3x3 convolution at 56x56, batch 8 (6,422,528-byte maps,
    a 147,456-byte weight): the allocator peaks at 3 maps and a weight inside the op,
    two maps over its two gradients."""
    a, w = (6_422_528, 0, 0), (147_456, 0, 0)
    extras = ks.conv_backward(a, w, a, ks.ConvKind(), needs_input=True, needs_weight=True)
    assert max(e[0] for e in extras) == 2 * 6_422_528
    # a 512-channel one at 7x7: two weights at once while the weight gradient is reordered
    a, w = (802_816, 0, 0), (9_437_184, 0, 0)
    extras = ks.conv_backward(a, w, a, ks.ConvKind(), needs_input=True, needs_weight=True)
    assert max(e[0] for e in extras) + 802_816 + 9_437_184 == 19_677_184  # the measured peak


@x86
@pytest.mark.parametrize("trainable", ["all", "stage_3"])
def test_the_peak_with_kernel_scratch_is_the_allocators(trainable):
    s = Scenario(model="resnet14-cifar", input_size=(3, 16, 16), num_classes=10, batch_size=8,
                 train_from=None if trainable == "all" else trainable)
    s = methods.resolve(s)
    predicted = estimate(s).memory
    measured = measure_cpu_plain_peak(s)
    assert abs(predicted.peak_bytes - measured["peak_bytes"]) <= 0.001 * measured["peak_bytes"]
    assert measured["peak_with_scratch_bytes"] > measured["peak_bytes"]  # there is scratch
    got, want = measured["peak_with_scratch_bytes"], predicted.peak_with_scratch_bytes
    assert abs(want - got) <= 0.005 * got, (want, got)


def test_cuda_has_no_scratch_prediction():
    assert estimate(Scenario(device="cuda", batch_size=8)).memory.peak_with_scratch_bytes is None


def test_a_depthwise_convolution_backward_reorders_less():
    """Measured on this machine (profiler, plain run, 2 threads).  MobileNetV3's strided
    5x5 depthwise convolution (672 channels, 14x14 to 7x7, batch 2) peaks 0.941 MiB over
    its two gradients: one input-sized buffer less than a dense strided one, and its
    weight gradient reorders neither activation."""
    x, w, out = (1_053_696, 0, 0), (67_200, 0, 0), (263_424, 0, 0)
    dense = ks.conv_backward_node("conv:strided", x, w, out, True, True)
    depthwise = ks.conv_backward_node(f"conv:strided:gemm1225x49x672x{672 * 196}:depthwise5",
                                      x, w, out, True, True)
    assert max(e[0] for e in depthwise) == 1_053_696 - 67_200 == 986_496
    assert max(e[0] for e in dense) == 2 * 1_053_696 - 67_200
    # a 5x5 one on a 3x3 map (576 channels), oneDNN's gemm:jit: four weights and an
    # unfolded channel (25 x 9 floats) a thread, 256 bytes of alignment; measured 462,856
    x, w = (41_472, 0, 0), (57_600, 0, 0)
    small = ks.conv_backward_node(f"conv:gemm225x9x576x{576 * 9}:depthwise5", x, w, x, True, True)
    assert max(e[0] for e in small) == 2 * (4 * 57_600 + 900) + 256 == 462_856
    # one thread, four: measured 231,556 and 925,456
    assert [max(e[0] for e in ks.conv_backward_node(
        f"conv:gemm225x9x576x{576 * 9}:depthwise5", x, w, x, True, True, threads))
        for threads in (1, 4)] == [231_556, 925_456]


def highest(alternatives: list, batch: int) -> int:
    """The largest alternative that holds at ``batch``."""
    return max(v for v in (e.bytes_at(batch, 0) if isinstance(e, ks.AtBatch) else at(e, batch)
                           for e in alternatives) if v is not None)


PATCH16 = "conv:strided:gemm150528x196x1x150528:patch"
"""ViT-B/16's patch embedding: 3 x 16 x 16 x 196 floats unfolded, 196 pixels, one group."""


def test_a_patch_embedding_reduces_over_one_image_per_thread():
    """ViT-B/16's 16x16/16 convolution on 3x224x224 images (a 2,359,296-byte weight, no
    input gradient), alone: 20,078,848 bytes over its weight gradient at batch 2 and at
    batch 4, two threads: oneDNN's gemm:jit, four weights and one unfolded image (here the
    image itself) a thread."""
    image, w = 602_112, (2_359_296, 0, 0)
    for batch in (2, 4):
        x = (0, image, 0)
        extras = ks.conv_backward_node(PATCH16, x, w, (0, 0, 0), False, True)
        assert highest(extras, batch) == 20_078_848
    # one image: oneDNN threads a single group's gemm over one thread (measured 10,039,552)
    assert highest(ks.conv_backward_node(PATCH16, (0, image, 0), w, (0, 0, 0), False, True),
                   1) == 4 * 2_359_296 + image + 256 == 10_039_552
    # in the model its gradient comes through a permute: one output more (ViT-B/32, batch 4)
    extras = ks.conv_backward_node("conv:strided:gemm150528x49x1x150528:patch", (0, image, 0),
                                   (9_437_184, 0, 0), (0, 150_528, 0), False, True)
    assert highest(extras, 4) == 8 * 9_437_184 + 2 * image + 256 + 4 * 150_528


def test_a_channels_last_input_is_not_reordered():
    """Measured (profiler, 1 and 2 threads, batch 2 and 8): a convolution whose input is
    already channels-last (ConvNeXt's maps, after a permute) reorders no activation; its
    backward holds three more weights (a 2x2/2 one: 14,155,776 bytes over its gradients
    for a 4,718,592-byte weight), a 7x7 depthwise one 65 (4,892,160 bytes for 384
    channels at 14x14 or 7x7)."""
    x, w, out = (602_112, 0, 0), (4_718_592, 0, 0), (301_056, 0, 0)
    assert ks.conv_backward_node("conv:strided:nhwc", x, w, out, True, True) == \
        [(14_155_776, 0, 0)]
    x, w = (602_112, 0, 0), (75_264, 0, 0)
    assert ks.conv_backward_node("conv:depthwise7:nhwc", x, w, x, True, True) == \
        [(4_892_160, 0, 0)]


@x86
@pytest.mark.parametrize("model", ["mnasnet0_5", "convnext_tiny"])
def test_depthwise_and_channels_last_scratch_is_the_allocators(model):
    """At 96x96, batch 2: MnasNet's peak with scratch sits in a small 5x5 depthwise
    backward (15,906,552 bytes predicted, 15,906,560 measured); ConvNeXt-T's layer norms
    leave channels-last maps for the next convolution (247,706,720 and 247,708,256)."""
    s = methods.resolve(Scenario(model=f"torchvision:{model}", input_size=(3, 96, 96),
                                 num_classes=10, batch_size=2, optimizer="sgd"))
    with torch_threads(2):  # the prediction is for the threads the run has
        predicted = estimate(s).memory.peak_with_scratch_bytes
        got = measure_cpu_plain_peak(s)["peak_with_scratch_bytes"]
    assert abs(predicted - got) <= 0.001 * got, (predicted, got)
