"""PODNet, BiC and FOSTER as PyCIL runs them, and costcl's E2E (issue 13).

Small-model checks run each step for real (ResNet-14 on 16x16 inputs, 20 classes in
2 tasks, batch 8, the last task): FLOPs exactly as FlopCounterMode counts the real
step, the op-level peak of its second step (torch.profiler's memory events, the
plain run) within 0.5% of the traced variant's.  The full-size figures come from
``benchmarks/public/pycil_repo.py`` on G-U-N/PyCIL at 87cc4110 (its own learners on
synthetic CIFAR-100, the second step of task 9, batch 128; see
tests/test_implementations_pycil.py for how they are read): they need the checkout,
so they are constants here, compared in the slow test.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from budgets import protocols
from costmodel import Scenario, engine, methods
from costmodel.estimation import estimate, peak_memory, trainable_set, variant_models
from costmodel.models.registry import build_model
from costmodel.trace.records import at
from lightcl.profiled import PlainRunProfile
from lightcl.runner import build_runner

B = 8
SMALL = dict(model="resnet14-cifar", dataset="cifar100", input_size=(3, 16, 16), num_classes=20,
             tasks=2, batch_size=B, buffer_size=40)
F32 = 4


def small(method: str) -> Scenario:
    return methods.resolve(Scenario(method=method, **SMALL))


def predicted(s: Scenario, variant: str) -> tuple[int, int]:
    """(FLOPs of the step, peak bytes) of one variant, traced alone."""
    m = methods.get(s.method, s.impl)
    sm = engine.step_model(s, m, variant)
    fl = sm.plan(trainable_set(s, m, sm, variant), False, "cpu", (B, 0)).flops
    flops = at(fl.forward, B, 0) + at(fl.grad_input, B, 0) + at(fl.grad_weight, B, 0)
    return flops, peak_memory(s, m, {variant: sm}, B, 0).peak_bytes


def real_flops(s: Scenario, variant: str) -> int:
    r = build_runner(s, "meta", variant=variant, seed=None)
    counter = FlopCounterMode(display=False)
    with counter:
        r.method.step(r.context, r.x, r.y)
    return counter.get_total_flops()


def real_peak(s: Scenario, variant: str) -> int:
    """The second real step's op-level peak, everything built inside the profile."""
    with PlainRunProfile() as prof:
        r = build_runner(s, "cpu", variant=variant)
        r.step()
        with prof.window("step"):
            r.step()
    return prof.peak("step").op_level_bytes


SLOW = pytest.mark.slow  # the default run keeps the steps no other test of costcl resembles


@pytest.mark.parametrize("method,variant", [
    ("bic", "bias"), ("foster", "compress"), ("e2e", "balanced"),
    pytest.param("podnet", "main", marks=SLOW), pytest.param("bic", "main", marks=SLOW),
    pytest.param("foster", "main", marks=SLOW)])
def test_traced_step_is_the_real_step(method, variant):
    s = small(method)
    flops, peak = predicted(s, variant)
    assert flops == real_flops(s, variant)
    measured = real_peak(s, variant)
    assert abs(peak - measured) / measured < 0.005, (peak, measured)


def test_catalog_and_implementations():
    for name in ("podnet", "bic", "foster"):
        assert list(methods.implementations(name)) == ["pycil"]
        assert methods.default_impl(name) == "pycil"
        assert methods.get(name).cites and not methods.get(name).trains
    assert list(methods.implementations("e2e")) == ["costcl"]
    assert not methods.get("e2e").trains  # its balanced subset is not a trainer phase


def test_memo_fair_protocol_rows_are_all_costed_now():
    t = protocols.fair("cifar100", "resnet32-cifar", (3, 32, 32), 100, 10, 10)
    assert t.uncosted == [] and t.to_json()["not_in_catalog"] == []
    assert set(protocols.SINGLE_BACKBONE) <= set(methods.catalog())
    assert t.methods["podnet"].exemplars == t.methods["bic"].exemplars == \
        t.methods["foster"].exemplars == 7431


def convnet_params(s: Scenario) -> int:
    """PyCIL's convnet: the backbone without its head, plus the unused 10-way fc."""
    net = build_model(s.model, s.classes, 3)
    head = net.fc.weight.numel() + net.fc.bias.numel()
    return sum(p.numel() for p in net.parameters()) - head + 64 * 10 + 10


def test_foster_keeps_the_boosting_networks_gradients_and_the_students_weights():
    """Compression: the boosting network's gradients (both backbones but their unused fcs,
    fc, fe_fc, oldfc) and momentum (the new backbone, fc, fe_fc), the student's weights."""
    s = small("foster")
    m = methods.get("foster")
    net = engine.step_model(s, m, "compress").network
    backbone = convnet_params(s) - 650
    fc, fe_fc, oldfc = 128 * 20 + 20, 64 * 20 + 20, 64 * 10 + 10
    stored = {st.name: st.nbytes for st in m.stored(s, net, "compress")}
    assert stored["foster.boosting_grads"] == F32 * (2 * backbone + fc + fe_fc + oldfc)
    assert stored["foster.boosting_momentum"] == F32 * (backbone + fc + fe_fc)
    assert stored["foster.student_weights"] == F32 * (backbone + 650 + 2 * fe_fc)
    # class means from task 0's single-backbone network (64 wide; 128 after two backbones)
    assert stored["class_means"] == 10 * 64 * 8 and stored["buffer.images"] == 40 * 3 * 16 * 16
    main = {st.name: st.nbytes for st in m.stored(s, net, "main")}
    assert main["foster.stale_grads"] == F32 * (backbone + oldfc)


def test_schedules_follow_pycils_data_sizes():
    bic = methods.get("bic").schedule(methods.resolve(Scenario(method="bic")))
    # task 1: 20 of each of 20 classes held out; 500 - 20 new, 200 - 20 old per class
    assert [(p.images, p.epochs, p.variant) for p in bic[1:3]] == [(6600, 170, "main"),
                                                                 (400, 170, "bias")]
    assert bic[-1].images == 2 * 100 and bic[0].epochs == 170
    pod = methods.get("podnet").schedule(methods.resolve(Scenario(method="podnet")))
    assert pod[0].epochs == pod[1].epochs == 160
    assert (pod[-1].images, pod[-1].epochs) == (22 * 100, 20)  # 2000 // 90 per class
    fos = methods.get("foster").schedule(methods.resolve(Scenario(method="foster")))
    assert [(p.images, p.epochs) for p in fos[-2:]] == [(5000 + 1800, 170), (5000 + 1800, 130)]
    e2e = methods.get("e2e").schedule(methods.resolve(Scenario(method="e2e")))
    assert (e2e[1].epochs, e2e[2].epochs, e2e[2].images) == (40, 30, 2000 + 200 * 10)


def test_podnet_builds_pycils_cosine_resnet32():
    """UCIR's 1x1-conv shortcuts add 2,752 parameters to ResNet-32; the classifier holds
    10 proxies per class and one scale (convs/linears.py)."""
    s = methods.resolve(Scenario(method="podnet"))
    m = methods.get("podnet")
    with torch.device("meta"):
        net = m.network(s, lambda: build_model(s.model, s.classes, 3, "meta"), 10)
    assert sum(p.numel() for p in net.convnet.parameters()) == 463_504 + 2_752
    assert net.fc.fc1.weight.shape == (900, 64) and net.fc.fc2.weight.shape == (100, 64)
    assert sum(p.numel() for p in net.parameters()) == 530_257  # as the runner counts PyCIL's


MEASURED = {  # (method, buffer, variant): (step peak bytes, forward FLOPs, backward FLOPs, host)
    ("bic", 1980, "main"): (353_844_016, 35_260_432_384, 35_147_350_016, 6_144_480),
    ("bic", 1980, "bias"): (321_869_584, 17_630_298_112, 35_147_350_016, 6_144_480),
    ("foster", 1800, "main"): (324_091_820, 35_263_709_184, 35_153_903_616, 5_636_160),
    ("foster", 1800, "compress"): (361_100_668, 52_895_645_696, 35_147_350_016, 5_636_160),
    ("podnet", 1980, "main"): (381_888_464, 35_422_666_752, 35_311_058_944, 6_144_480),
}
"""PyCIL's own step at commit 87cc4110 on synthetic data, measured by
benchmarks/public_code.py (PODNet's POD-spatial sums two broadcast gradients into a new
map-sized tensor: the engine allocates it since 2026-12-01, -2.1% before)."""


@pytest.mark.slow
@pytest.mark.parametrize("key", list(MEASURED))
def test_full_size_against_pycils_own_step(key):
    method, buffer, variant = key
    peak, fwd, bwd, host = MEASURED[key]
    s = methods.resolve(Scenario(method=method, buffer_size=buffer))
    m = methods.get(method)
    sm = variant_models(s, m)[variant]
    fl = sm.plan(trainable_set(s, m, sm, variant), False, "cpu", (128, 0)).flops
    assert (at(fl.forward, 128, 0), at(fl.grad_input, 128, 0) + at(fl.grad_weight, 128, 0)) == (fwd, bwd)
    device_peak = peak_memory(s, m, {variant: sm}, 128, 0).peak_bytes - host
    error = (device_peak - peak) / (peak + host)
    assert abs(error) < 0.005, error
    assert estimate(Scenario(method=method, buffer_size=buffer)).memory.host_bytes == 0  # cpu
