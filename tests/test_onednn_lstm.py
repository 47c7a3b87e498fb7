"""LSTMs on the CPU's oneDNN kernel: the trace's route, oneDNN's sizes, and the plain run.

PyTorch runs an LSTM on the CPU as one ``mkldnn_rnn_layer`` per layer and direction
(:mod:`costmodel.trace.recurrent`).  The workspace and scratch sizes of
:mod:`costmodel.memory.onednn_rnn` are held to what the kernel allocates on this machine
(torch.profiler's memory events; real tensors, a few KB each), and whole steps of eight
LSTM models (layers, directions, batch-first or not, no bias, a head on h_n, padded
leading dimensions) to the plain run's peak, op level and with kernel scratch, exactly.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from costmodel.estimation import estimate
from costmodel.memory import onednn_rnn
from costmodel.scenario import Scenario
from lightcl.validate import measure_cpu_plain_peak, measure_flops
from tests.conftest import importable

NETS = '''
from torch import nn


class Seq(nn.Module):
    """(B, T*F) -> an LSTM over T steps of F features; the head on the last output or h_n."""

    def __init__(self, num_classes=10, features=16, hidden=32, layers=1, bidirectional=False,
                 batch_first=True, bias=True, use_h=False):
        super().__init__()
        self.f, self.bf, self.use_h = features, batch_first, use_h
        self.lstm = nn.LSTM(features, hidden, layers, bias=bias, batch_first=batch_first,
                            bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x):
        x = x.view(x.shape[0], -1, self.f)
        out, (h, c) = self.lstm(x if self.bf else x.transpose(0, 1))
        if self.use_h:
            return self.fc(h[-1])
        return self.fc(out[:, -1] if self.bf else out[-1])


def base(num_classes=10): return Seq(num_classes)
def two_layers(num_classes=10): return Seq(num_classes, layers=2)
def bidir(num_classes=10): return Seq(num_classes, bidirectional=True)
def seq_first(num_classes=10): return Seq(num_classes, batch_first=False)
def nobias(num_classes=10): return Seq(num_classes, bias=False)
def use_h(num_classes=10): return Seq(num_classes, use_h=True)
def odd(num_classes=10): return Seq(num_classes, features=20, hidden=50)
def deep_bidir(num_classes=10): return Seq(num_classes, features=8, hidden=24, layers=3,
                                           bidirectional=True)


class Gru(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.gru, self.fc = nn.GRU(16, 32, batch_first=True), nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.gru(x.view(x.shape[0], -1, 16))[0][:, -1])
'''
MODULE = "lstm_nets"
# name: (batch, input size, plain-run peak op level, with kernel scratch), measured here
CASES = {
    "base": (8, 800, 1_055_704, 1_351_696),
    "two_layers": (8, 800, 1_969_112, 2_273_296),
    "bidir": (8, 800, 1_980_888, 2_276_880),
    "seq_first": (8, 800, 1_055_704, 1_300_496),
    "nobias": (8, 800, 1_079_256, 1_375_248),
    "use_h": (8, 800, 1_005_528, 1_300_496),
    "odd": (5, 2000, 2_230_424, 2_898_912),
    "deep_bidir": (4, 400, 2_903_320, 3_054_288),
}


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    with importable(tmp_path_factory, MODULE, NETS) as module:
        yield module


def _scenario(name: str, batch: int, size: int) -> Scenario:
    return Scenario(model=f"{MODULE}:{name}", num_classes=10, batch_size=batch, input_size=(size,))


def _kernel_allocations(batch: int, steps: int, features: int, hidden: int) -> dict:
    """What each oneDNN LSTM op allocates itself (not in a child aten op), in order."""
    lstm, x = nn.LSTM(features, hidden), torch.randn(steps, batch, features)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out, _ = lstm(x)
        workspace = out.grad_fn._saved_result3.numel()
        out.sum().backward()
    found: dict[str, list[int]] = {"forward": [], "backward": []}
    allocation = torch._C._profiler._EventType.Allocation
    ops = {"aten::mkldnn_rnn_layer": "forward", "aten::mkldnn_rnn_layer_backward": "backward"}

    def walk(event, inside):  # noqa: ANN001
        if event.tag == allocation:
            if inside and event.extra_fields.alloc_size > 0:
                found[inside].append(int(event.extra_fields.alloc_size))
            return
        here = ops.get(event.name, None if event.name.startswith("aten::") else inside)
        for child in event.children:
            walk(child, here)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root, None)
    return {**found, "workspace": workspace}


SHAPES = [(8, 50, 16, 32), (8, 50, 17, 33), (1, 5, 3, 5), (4, 10, 100, 20), (17, 8, 127, 195),
          (2, 2, 7, 167), (8, 5, 1, 32), (8, 3, 256, 256), (130, 3, 16, 32), (14, 7, 125, 8)]


@pytest.mark.parametrize("batch,steps,features,hidden", SHAPES)
def test_workspace_and_scratch_are_what_onednn_allocates(batch, steps, features, hidden):
    got = _kernel_allocations(batch, steps, features, hidden)
    assert got["workspace"] == onednn_rnn.workspace_bytes(steps, batch, features, hidden)
    # inside the forward: the summed bias (a child op), weight reorders, the scratchpad
    assert 4 * hidden * 4 + sum(got["forward"]) == \
        onednn_rnn.forward_scratch(steps, batch, features, hidden)
    # inside the backward, beyond its 7 gradients (6 made by child ops before, 1 after)
    own = sum(got["backward"])
    assert 4 * hidden * 4 + own - 4 * hidden * 4 == onednn_rnn.backward_scratch(
        steps, batch, features, hidden, False, 0)


def test_leading_dimensions_are_padded_as_onednn_pads_them():
    assert [onednn_rnn.good_ld(d) for d in (1, 16, 17, 128, 256, 255, 512)] == \
        [16, 16, 32, 128, 272, 272, 528]


@pytest.mark.parametrize("name", list(CASES))
def test_a_step_peaks_where_the_plain_run_does(nets, name):
    batch, size, op_level, with_scratch = CASES[name]
    e = estimate(_scenario(name, batch, size))
    assert (e.memory.peak_bytes, e.memory.peak_with_scratch_bytes) == (op_level, with_scratch)
    measured = measure_cpu_plain_peak(e.scenario)
    assert (measured["peak_bytes"], measured["peak_with_scratch_bytes"]) == (op_level,
                                                                             with_scratch)


@pytest.mark.parametrize("name", ["base", "deep_bidir", "nobias"])
def test_flops_are_the_kernels_gemms(nets, name):
    """FlopCounterMode, given the kernel's formulas, counts the same step on the same path;
    the backward computes every gradient: twice the forward's GEMMs."""
    batch, size, _, _ = CASES[name]
    e = estimate(_scenario(name, batch, size))
    measured = measure_flops(e.scenario)
    assert (e.step.forward_flops, e.step.backward_flops) == (measured["forward_flops"],
                                                              measured["backward_flops"])
    layers = {"base": [(16, 32)], "nobias": [(16, 32)],
              "deep_bidir": [(8, 24)] * 2 + [(48, 24)] * 4}[name]  # (features, hidden) each
    steps = size // layers[0][0]
    lstm = sum(2 * steps * batch * 4 * h * (f + h) for f, h in layers)
    head = 2 * batch * 10 * (48 if name == "deep_bidir" else 32)
    assert e.step.forward_flops == lstm + head
    assert e.step.backward_flops == 2 * (lstm + head)  # every gradient, the head's two too


def test_the_estimate_says_which_kernel_it_costed(nets):
    cpu = estimate(_scenario("base", 8, 800)).notes
    assert any(n.startswith("LSTM layers are costed on the CPU's oneDNN kernel") for n in cpu)
    cuda = estimate(Scenario(model=f"{MODULE}:base", num_classes=10, batch_size=8,
                             input_size=(800,), device="cuda")).notes
    assert any("cuDNN's RNN kernels" in n and "lower bound" in n for n in cuda)
    gru = estimate(Scenario(model=f"{MODULE}:Gru", num_classes=10, batch_size=8,
                            input_size=(800,))).notes
    assert any(n.startswith("GRU layers are costed as their cell unrolled on meta") for n in gru)
    assert not any("oneDNN kernel" in n for n in gru)
