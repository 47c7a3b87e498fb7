"""oneDNN's pointwise weight gradient on AVX2: its scratchpad, predicted and measured.

A 1x1 convolution's weight gradient (``jit_1x1:avx2``) splits its reduction across
threads when it has fewer weight blocks than threads to keep busy, and books each
thread's copy in a scratchpad (:mod:`costmodel.memory.onednn_conv`).  The sizes are held
to what the kernel allocates (torch.profiler's memory events on single convolutions, a
few hundred KB each), and whole steps of RegNetY-400MF (whose 440-channel 1x1s are one
block each) and ResNet-50 to the plain run's peak with kernel scratch, at 2, 3 and 4
threads.
"""
from __future__ import annotations

import platform

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from costmodel import methods
from costmodel.estimation import estimate
from costmodel.memory import kernel_scratch as ks, onednn_conv
from costmodel.scenario import Scenario
from lightcl.validate import measure_cpu_plain_peak
from tests.conftest import torch_threads

avx2 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64")
    or torch.backends.cpu.get_cpu_capability() != "AVX2",
    reason="the sizes are those of oneDNN's AVX2 kernels")


def test_the_balance_splits_a_reduction_only_where_blocks_are_too_few():
    """``reduce_balancer_t::balance`` by hand: one 440x440 block (55x55 channel blocks)
    over 2 threads is split two ways; 16 jobs are not; 8 jobs over 3 threads with a long
    reduction are (one group of three)."""
    job = 55 * 55 * 64
    assert onednn_conv.balance(2, job, 1, 98, 2 * job * 8) == onednn_conv.Balance(1, 2, 1)
    assert onednn_conv.balance(2, 64, 16, 98, 2 * 64 * 8) == onednn_conv.Balance(2, 1, 8)
    assert onednn_conv.balance(3, 64, 8, 256, 3 * 64 * 8) == onednn_conv.Balance(1, 3, 8)
    # an odd count of jobs splits once the reduction is longer than twice the jobs
    assert onednn_conv.balance(2, 64, 3, 6, 2 * 64 * 8).threads_per_group == 1
    assert onednn_conv.balance(2, 64, 3, 8, 2 * 64 * 8).threads_per_group == 2


def test_the_scratchpad_is_two_copies_a_barrier_and_alignment():
    """440 -> 440 at 7x7, batch 2, two threads: two copies of the 774,400-byte weight, 128
    bytes of alignment and a page-aligned barrier context (8,192): 1,557,120 bytes, as
    measured; strided (14x14 to 7x7), each thread's copy of the strided pixels too."""
    assert onednn_conv.pointwise_weight_scratch(440, 440, 49, 2, False, False, 2) == 1_557_120
    assert onednn_conv.pointwise_weight_scratch(440, 440, 49, 2, True, False, 2) == 1_729_728
    assert onednn_conv.pointwise_weight_scratch(448, 448, 49, 2, False, False, 2) == 0


def _scratchpad(conv: nn.Conv2d, x: torch.Tensor) -> list[int]:
    """What ``convolution_backward`` allocates, in order (profiler memory events)."""
    def step() -> None:
        conv(x).sum().backward()

    step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    found: list[int] = []
    allocation = torch._C._profiler._EventType.Allocation

    def walk(event, inside: bool) -> None:  # noqa: ANN001
        if event.tag == allocation:
            if inside and event.extra_fields.alloc_size > 0:
                found.append(int(event.extra_fields.alloc_size))
            return
        for child in event.children:
            walk(child, inside or event.name == "aten::convolution_backward")

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root, False)
    return found


# (threads, in channels, out channels, map side, stride, batch, bias)
SHAPES = [(2, 440, 440, 7, 1, 2, False), (2, 48, 8, 1, 1, 2, True), (2, 104, 26, 1, 1, 2, True),
          (2, 208, 440, 14, 2, 2, False), (3, 256, 512, 8, 1, 4, False),
          (3, 24, 24, 7, 1, 2, False), (4, 110, 440, 1, 1, 8, True), (4, 512, 16, 4, 2, 3, False),
          (2, 64, 256, 14, 1, 8, False), (3, 200, 72, 3, 1, 16, True)]


@avx2
@pytest.mark.parametrize("n,ic,oc,side,stride,batch,bias", SHAPES)
def test_the_scratchpad_is_what_the_kernel_allocates(n, ic, oc, side, stride, batch, bias):
    torch.manual_seed(0)
    conv, x = nn.Conv2d(ic, oc, 1, stride=stride, bias=bias), torch.randn(batch, ic, side, side)
    with torch_threads(n):
        got = _scratchpad(conv, x)
    out = side // stride
    want = onednn_conv.pointwise_weight_scratch(ic, oc, out * out, batch, stride > 1, bias, n)
    # every allocation is an operand (plain or in 8-channel blocks), a gradient, or the
    # scratchpad; a shape that splits nothing books none
    pad = lambda c: -(-c // 8) * 8  # noqa: E731
    operands = {4 * v for v in (ic * oc, pad(ic) * pad(oc), oc, pad(oc),
                                batch * ic * side * side, batch * pad(ic) * side * side,
                                batch * oc * out * out, batch * pad(oc) * out * out, 1)}
    assert [v for v in got if v not in operands] == ([want] if want else [])


@avx2
@pytest.mark.parametrize("model,side,batch,n,with_scratch", [
    ("regnet_y_400mf", 224, 2, 2, 91_425_160), ("regnet_y_400mf", 224, 2, 3, 92_199_560),
    ("resnet50", 64, 4, 3, 267_268_288), ("resnet50", 64, 4, 4, 305_090_752)])
def test_a_step_peaks_where_the_plain_run_does(model, side, batch, n, with_scratch):
    """Byte for byte, at the threads the run has (the estimate's ``scratch_threads``).
    RegNetY-400MF at 224 was 0.377% under at two threads without the scratchpad; ResNet-50's
    peak sits in a 3x3 weight gradient of a 2x2 map, four weights per thread."""
    s = methods.resolve(Scenario(model=f"torchvision:{model}", input_size=(3, side, side),
                                 num_classes=10, batch_size=batch, optimizer="sgd"))
    with torch_threads(n):
        e = estimate(s)
        measured = measure_cpu_plain_peak(s)
    assert e.memory.scratch_threads == n
    assert e.memory.peak_with_scratch_bytes == measured["peak_with_scratch_bytes"] == with_scratch
    assert e.memory.peak_bytes == measured["peak_bytes"]


def test_aten_keeps_small_images_and_single_thread_1x1s_on_its_own_kernel():
    """``use_mkldnn`` (aten/src/ATen/native/Convolution.cpp): oneDNN runs a float
    convolution unless it is a dense 1x1 at stride 1 with fewer than 16 images on one
    thread, or one image of at most 20,480 elements through a dense kernel of 3 or less."""
    from costmodel.trace.kernel_tags import native_path

    # ResNet-18's last 3x3 at 64x64 input, one image: 512x2x2 = 2,048 elements
    assert native_path((1, 512, 2, 2), (512, 512, 3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1,
                       False) == f":smallimage{4 * 512 * 9 * 4}:image2048"
    assert native_path((2, 64, 8, 8), (256, 64, 1, 1), (8, 8), (1, 1), (0, 0), (1, 1), 1,
                       False) == ":plain1x1:smallimage0:image4096"
    assert native_path((2, 64, 32, 32), (64, 64, 3, 3), (32, 32), (1, 1), (1, 1), (1, 1), 1,
                       False) == ""  # 65,536 elements an image, not a 1x1: oneDNN's always
    assert native_path((2, 64, 8, 8), (64, 1, 3, 3), (8, 8), (1, 1), (1, 1), (1, 1), 64,
                       False) == ""  # grouped
    path = ks.NativePath(plain_1x1=True, small_image=False, unfolded_bytes=0)
    assert [path.onednn(images, threads) for images, threads in
            ((1, 1), (15, 1), (16, 1), (2, 2))] == [False, False, True, True]
    small = ks.NativePath(plain_1x1=False, small_image=True, unfolded_bytes=73_728)
    assert [small.onednn(images, 2) for images in (1, 2)] == [False, True]


@avx2
@pytest.mark.parametrize("model,side,batch,n,op_level,with_scratch", [
    ("resnet18", 64, 1, 2, 90_601_000, 91_059_752),       # +66% costed as oneDNN's
    ("mobilenet_v2", 64, 1, 2, 22_672_168, 22_733_608),
    ("regnet_y_400mf", 64, 1, 2, 32_815_728, 32_868_976),
    ("regnet_y_400mf", 224, 2, 1, 90_344_792, 90_689_752)])  # its 1x1s on ATen's kernel
def test_a_step_on_atens_own_kernel_peaks_where_the_plain_run_does(model, side, batch, n,
                                                                    op_level, with_scratch):
    """One image, or one thread: ATen's kernel reorders nothing and unfolds the image
    (im2col) instead; RegNet's strided grouped convolutions of 8 channels a group hold
    no third input-sized buffer (the peak at one thread)."""
    s = methods.resolve(Scenario(model=f"torchvision:{model}", input_size=(3, side, side),
                                 num_classes=10, batch_size=batch, optimizer="sgd"))
    with torch_threads(n):
        e = estimate(s)
        measured = measure_cpu_plain_peak(s)
    assert (e.memory.peak_bytes, e.memory.peak_with_scratch_bytes) == (op_level, with_scratch)
    assert (measured["peak_bytes"], measured["peak_with_scratch_bytes"]) == \
        (op_level, with_scratch)
