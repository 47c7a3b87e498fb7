"""Allocations of 32 MiB or more, whose pages a CPU step faults in afresh each time."""
from __future__ import annotations

import dataclasses

import pytest

from costmodel import Scenario, engine, methods
from costmodel.estimation import estimate
from costmodel.large_allocations import MMAP_THRESHOLD_BYTES, allocation_lines, large_bytes
from costmodel.time_profile import datasheet

PARAM_BYTES = 11_173_962 * 4
"""The CIFAR ResNet-18's parameters, flattened into one vector by Mammoth's get_params()."""


def lines(method: str) -> tuple:
    s = methods.resolve(Scenario(method=method, model="resnet18-cifar"))
    sm = engine.step_model(s, methods.get(s.method, s.impl))
    return allocation_lines(sm.trace, sm.plan(sm.all_params()).selection)


def test_ewc_penalty_gradients_allocate_four_parameter_vectors():
    """Mammoth's EWC (models/ewc_on.py:67-68 at e75a491) sets the penalty's gradients
    itself, ``e_lambda * 2 * fish * (get_params().data - checkpoint)``: the scaled Fisher,
    the cat, the difference and the product are each a new 44.7 MB vector, and nothing
    of it is back-propagated."""
    fwd, bwd = lines("ewc")
    assert PARAM_BYTES > MMAP_THRESHOLD_BYTES
    assert large_bytes(fwd, 1, 0) == 4 * PARAM_BYTES
    assert large_bytes(bwd, 1, 0) == 0


def test_a_plain_step_reaches_the_threshold_only_with_the_batch():
    """SGD's largest tensors are the first stage's maps, 64 x 32 x 32 floats a sample:
    exactly 32 MiB at batch 128, below it at 127."""
    fwd, bwd = lines("sgd")
    assert large_bytes(fwd, 1, 0) == large_bytes(bwd, 1, 0) == 0
    assert large_bytes(fwd, 127, 0) == large_bytes(bwd, 127, 0) == 0
    at_128 = large_bytes(fwd, 128, 0)
    assert at_128 > 0 and at_128 % (128 * 64 * 32 * 32 * 4) == 0
    assert large_bytes(bwd, 128, 0) > 0


def test_the_sorted_form_equals_the_product_at_every_batch():
    import numpy as np

    from costmodel.large_allocations import LargeBytes

    for method in ("ewc", "sgd", "er"):
        for ls in lines(method):
            fast = LargeBytes(ls)
            for b in (0, 1, 7, 127, 128, 129, 300, 4096):
                for r in (0, 5, 128):
                    assert fast(b, r) == large_bytes(ls, b, r), (method, b, r)
    odd = np.array([[MMAP_THRESHOLD_BYTES - 10, 3, 0], [0, 1 << 20, 1 << 19],
                    [MMAP_THRESHOLD_BYTES, 0, 0], [5, 0, 0]], dtype=np.int64)
    for b in range(0, 70):
        for r in (0, 3, 64):
            assert LargeBytes(odd)(b, r) == large_bytes(odd, b, r), (b, r)


def test_the_alloc_rate_adds_bytes_over_rate_to_the_step():
    s = Scenario(method="ewc", model="resnet18-cifar", batch_size=8)
    base = datasheet("x", "cpu", 1e11, 2e10, 0.5, 0.5, 5e-6, "s")
    rates = dict(base.rates)
    rates["alloc"] = dataclasses.replace(rates["alloc"], per_s=2e9)
    without = estimate(s, profile=base).time
    with_faults = estimate(s, profile=dataclasses.replace(base, rates=rates)).time
    assert without.share["alloc"] == 0
    assert with_faults.step_s - without.step_s == pytest.approx(4 * PARAM_BYTES / 2e9, rel=1e-9)
    assert with_faults.forward_s - without.forward_s == pytest.approx(4 * PARAM_BYTES / 2e9,
                                                                      rel=1e-9)
