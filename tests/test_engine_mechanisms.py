"""The engine's code-level mechanisms, each checked against the plain run.

Each case is a small step written as a public codebase writes it; the prediction
must equal torch.profiler's op-level peak of the second real step on the CPU
(tolerance: 64 bytes, the profiler's one-byte allocations of `.any()` results).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from costmodel import Scenario, engine, methods
from costmodel.estimation import peak_memory
from costmodel.methods.base import Method
from costmodel.models.registry import build_model
from lightcl.context import TrainContext
from lightcl.profiled import PlainRunProfile
from lightcl.runner import anomaly

SCENARIO = methods.resolve(Scenario(method="sgd", batch_size=4, input_size=(3, 16, 16)))


class ZeroAfterForward(Method):
    """PyCIL's loop: zero_grad() after the forward, so the last step's gradients live through it."""
    impl, zeroes_grad_in_step = "test-zero", True

    def step(self, ctx, x, y):
        loss = F.cross_entropy(ctx.model(x), y)
        ctx.zero_grad()
        ctx.backward(loss)
        return loss.detach()


class AnomalyChecked(Method):
    """LightCL's repository: backward under set_detect_anomaly(True)."""
    impl = "test-anomaly"

    def anomaly_mode(self, variant="main"):
        return True

    def step(self, ctx, x, y):
        loss = F.cross_entropy(ctx.model(x), y)
        ctx.backward(loss)
        return loss.detach()


class KeptGraph(Method):
    """A forward with grad enabled whose output is held through the step, never back-propagated."""
    impl = "test-kept"

    def step(self, ctx, x, y):
        held = ctx.model(x[:2])
        loss = F.cross_entropy(ctx.model(x), y)
        ctx.backward(loss)
        del held
        return loss.detach()


def measured(method: Method) -> int:
    s = SCENARIO
    with PlainRunProfile() as prof:
        net = build_model(s.model, s.classes, 3, "cpu")
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        x = torch.randn(s.batch_size, *s.input_shape)
        y = torch.randint(0, s.classes, (s.batch_size,))
        ctx = TrainContext(net, zero_grad=opt.zero_grad)
        for i in range(2):
            with prof.window(str(i)):
                if not method.zeroes_grad_in_step:
                    opt.zero_grad(set_to_none=True)
                with anomaly(method, "main"):
                    method.step(ctx, x, y)
                opt.step()
    return prof.peak("1").op_level_bytes


@pytest.mark.parametrize("cls", [ZeroAfterForward, AnomalyChecked, KeptGraph])
def test_mechanism_matches_the_plain_run(cls):
    method = cls()
    method.name = "sgd"
    sm = engine._trace_method(SCENARIO, method, "main")
    predicted = peak_memory(SCENARIO, method, {"main": sm}, SCENARIO.batch_size, 0).peak_bytes
    assert abs(predicted - measured(method)) <= 64


def test_each_mechanism_is_seen():
    """Without the mechanism the prediction would be the plain SGD step's: each adds memory
    at the peak here (the anomaly check only a checkpoint: its bool tensor is a quarter of
    a gradient and comes after the node's inputs are released)."""
    plain = peak_memory(SCENARIO, methods.get("sgd"), {"main": engine.step_model(
        SCENARIO, methods.get("sgd"))}, SCENARIO.batch_size, 0).peak_bytes
    for cls in (ZeroAfterForward, KeptGraph):
        m = cls()
        m.name = "sgd"
        sm = engine._trace_method(SCENARIO, m, "main")
        assert peak_memory(SCENARIO, m, {"main": sm}, SCENARIO.batch_size, 0).peak_bytes > plain
    m = AnomalyChecked()
    m.name = "sgd"
    sgd = engine.step_model(SCENARIO, methods.get("sgd"))
    checked = engine._trace_method(SCENARIO, m, "main").plan(sgd.all_params())
    checks = sum("anomaly check" in w for w in checked.timeline.where)
    assert checks == 140  # one per gradient the backward hands on (ResNet-18, every layer trains)
    assert not any("anomaly check" in w for w in sgd.plan(sgd.all_params()).timeline.where)
