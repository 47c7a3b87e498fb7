"""validate compares the step it measures with that step's prediction.

Found by running every implementation at batch 8 against the plain run
(``python benchmarks/validation_table.py --plain``): FOSTER's predicted peak is in its
compression step, but validate measured the boosting step (+22%); the LightCL
repository keeps at most one batch as its stored samples, so at a batch below the
buffer size it replays the batch, not ``buffer_size`` samples (+4%, FLOPs +44%); and
resolving a scenario twice refused latent replay's empty default cut.
"""
from __future__ import annotations

import pytest

from costmodel import methods
from costmodel.scenario import Scenario
from lightcl.validate import peak_variant, validate


@pytest.mark.parametrize("name", sorted(methods.catalog()))
def test_resolving_twice_changes_nothing(name):
    setting = "task-il" if name in ("pnn", "packnet") else "class-il"  # task identity at test
    once = methods.resolve(Scenario(method=name, batch_size=8, setting=setting))
    assert methods.resolve(once) == once


def test_the_lightcl_repository_replays_at_most_one_batch():
    s = methods.resolve(Scenario(method="lightcl", impl="lightcl", batch_size=8))
    assert s.buffer_size == 15
    assert methods.get("lightcl", "lightcl").replay_batch(s) == 8
    v = validate(s, steps=1)
    assert v.flops_error == 0
    assert abs(v.peak_error) <= 0.001, (v.compared_peak_bytes, v.measured["peak_bytes"])


def test_foster_is_measured_in_its_compression_step():
    s = methods.resolve(Scenario(method="foster", impl="pycil", batch_size=4, device="cpu"))
    assert peak_variant(s) == "compress"
    v = validate(s, steps=1)
    assert any("'compress' step" in n for n in v.notes)
    assert abs(v.peak_error) <= 0.001, (v.compared_peak_bytes, v.measured["peak_bytes"])
