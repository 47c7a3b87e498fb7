"""PyCIL implementations (issue 9): iCaRL, WA, Replay, DER and MEMO as PyCIL's own loop runs them.

The figures marked "measured" come from ``benchmarks/public/pycil_repo.py`` run on
G-U-N/PyCIL at 87cc4110 (its own learners, networks and DataManager on synthetic
CIFAR-100, CPU, the second step of the last task: 90 known of 100 classes,
torch.profiler memory events at op level, FlopCounterMode split into forward
and backward); the benchmark needs the checkout, these tests do not.  The
profiler sees the torch allocator only, so the learner's host numpy memory
(exemplars, labels, class means; the runner's ``host_bytes``) is reported apart
and costcl's CPU peak, which counts it, is compared without it.
"""
import pytest

from costmodel import Scenario, methods
from costmodel.estimation import estimate

BUFFER = 1980  # PyCIL's memory_size 2000 // 90 known classes = 22 per class
MEASURED = {  # case: (step peak bytes, forward FLOPs, backward FLOPs, host bytes), batch 128
    "icarl": (353_194_496, 35_260_432_384, 35_147_350_016, 6_144_480),
    "wa": (353_194_496, 35_260_432_384, 35_147_350_016, 6_144_480),
    "replay": (320_007_024, 17_630_298_112, 35_147_350_016, 6_144_480),
    "der-expand": (337_886_488, 176_303_161_344, 35_177_201_664, 6_513_120),
    "memo": (715_472_424, 69_285_494_784, 86_817_472_512, 6_513_120),
}
MEASURED_B64 = {"icarl": 180_372_480, "der-expand": 180_520_472}
IMG, LABEL = 3 * 32 * 32, 8
TRAINED = 470_004  # ResNet-32 + the 100-way fc; the convnet's unused 10-way fc gets no gradient


def est(method, **kw):
    return estimate(Scenario(method=method, buffer_size=BUFFER, **kw))


@pytest.mark.parametrize("method", list(MEASURED))
def test_pycil_is_the_default_and_matches_the_public_code(method):
    assert methods.default_impl(method) == "pycil"
    assert list(methods.implementations(method)) == ["costcl", "pycil"]
    peak, fwd, bwd, host = MEASURED[method]
    e = est(method)
    assert e.scenario.impl == "pycil"
    assert (e.step.forward_flops, e.step.backward_flops) == (fwd, bwd)
    device_peak = e.memory.peak_bytes - host
    assert abs(device_peak - peak) / peak < 0.005
    assert e.memory.run_peak_bytes >= e.memory.peak_bytes


@pytest.mark.parametrize("method", list(MEASURED_B64))
def test_batch_64(method):
    e = est(method, batch_size=64)
    peak = MEASURED_B64[method]
    assert abs(e.memory.peak_bytes - MEASURED[method][3] - peak) / peak < 0.005


def test_exemplars_and_class_means_are_host_numpy():
    """On a CUDA device the learner's numpy memory is reported apart, byte for byte
    what the runner read from the learner (1,980 uint8 images, int64 labels, 90 x 64
    float64 class means; DER's means are 9 x 64 wide)."""
    e = est("icarl", device="cuda")
    assert e.memory.host_bytes == BUFFER * (IMG + LABEL) + 90 * 64 * 8 == MEASURED["icarl"][3]
    assert e.memory.breakdown_bytes["buffer"] == 0
    cpu = est("icarl")
    assert cpu.memory.breakdown_bytes["buffer"] == BUFFER * (IMG + LABEL)
    der = methods.get("der-expand")
    s = methods.resolve(Scenario(method="der-expand", buffer_size=BUFFER, device="cuda"))
    from costmodel import engine
    net = engine.step_model(s, der).network
    assert engine.stored_bytes(der.stored(s, net), "cuda")["host"] == MEASURED["der-expand"][3]


def test_previous_gradients_are_alive_in_the_forward():
    """zero_grad comes after the forward (icarl.py:169): the peak, inside the teacher's
    forward, holds the previous step's gradients of every parameter that got one; the
    convnet's unused fc gets neither a gradient nor a momentum buffer."""
    e = est("icarl")
    bd = e.memory.breakdown_bytes
    assert e.memory.phase == "forward"
    assert bd["gradients"] == 4 * TRAINED and bd["optimizer_state"] == 4 * TRAINED
    assert bd["parameters"] == 4 * (TRAINED + 650)
    clean = est("icarl", impl="costcl")
    assert clean.memory.breakdown_bytes["gradients"] == 0  # zeroed before the step


def test_the_teacher_is_the_previous_tasks_network():
    """Frozen copy made after task 8: its classifier is 90 wide (params and buffers)."""
    bd = est("icarl").memory.breakdown_bytes
    teacher = 4 * (TRAINED - 10 * 64 - 10 + 650) + 4 * 2 * 1136 + 8 * 31
    assert bd["method_state"] == teacher + 90 * 64 * 8
