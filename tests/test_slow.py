"""Full-size checks left out of the default run: python -m pytest -m slow"""
from __future__ import annotations

import pytest

from costmodel import Scenario
from lightcl.validate import validate

CASES = [("sgd", {}), ("er", {}), ("derpp", {}), ("ewc", {}), ("lwf", {}), ("lightcl", {}),
         ("lightcl", {"sparsity": 0.9}), ("odil-freeze", {})]


@pytest.mark.slow
@pytest.mark.parametrize("method,kw", CASES, ids=[f"{m}{kw}" for m, kw in CASES])
def test_validate_on_real_cpu_tensors_at_batch_32(method, kw):
    v = validate(Scenario(method=method, batch_size=32, **kw), steps=2)
    assert v.predicted.step.forward_flops == v.measured["forward_flops"]
    assert v.predicted.step.backward_flops == v.measured["backward_flops"]
    assert abs(v.peak_error) <= 0.03
