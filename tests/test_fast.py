"""StepEstimator answers what estimate() answers, for the step, at any configuration."""
from __future__ import annotations

import pytest

from costmodel import Scenario
from costmodel.estimation import estimate
from costmodel.fast import StepEstimator
from costmodel.time_profile import datasheet

PROFILE = datasheet("x", "cpu", 1e11, 2e10, 0.5, 0.5, 5e-6, "s")


@pytest.mark.parametrize("batch,opt,freeze", [(8, "sgd", None), (32, "adam", "layer3"),
                                              (3, "sgd-momentum", "linear"), (128, "adamw", None)])
def test_step_estimator_equals_estimate(batch, opt, freeze):
    base = Scenario(method="sgd", impl="costcl", model="resnet18-cifar")
    fast = StepEstimator(base, PROFILE).step(batch, opt, freeze)
    e = estimate(base.replace(batch_size=batch, optimizer=opt, train_from=freeze),
                 profile=PROFILE)
    assert (fast.forward_flops, fast.backward_flops) == (e.step.forward_flops,
                                                         e.step.backward_flops)
    assert (fast.peak_bytes, fast.phase) == (e.memory.peak_bytes, e.memory.phase)
    assert fast.step_s == pytest.approx(e.time.step_s, rel=1e-12)
