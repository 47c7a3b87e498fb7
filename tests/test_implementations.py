"""Implementations: each method as a named public codebase runs it (issue 9).

The figures marked "measured" come from ``benchmarks/public_code.py`` run on
the LightCL repository at 62fda8b7 (its own LightCL.py and prune.py, synthetic
data, CPU, the second step of task 1, torch.profiler memory events at op
level); the benchmark needs the checkout, these tests do not.
"""
import json

import pytest
import torch

from costmodel import Scenario, methods
from costmodel.errors import CostclError
from costmodel.estimation import estimate
from costmodel.models.registry import build_model

MEASURED = {  # benchmarks/public_code.py --lightcl CHECKOUT, bytes
    "dense": {"step": 152_146_385, "run": 189_357_108},
    "sparse": {"step": 122_575_185, "run": 176_959_644},
}
FORWARD, BACKWARD = 52_209_735_680, 23_262_572_544  # FlopCounterMode on the public step


def test_lightcl_defaults_to_its_repository():
    assert methods.default_impl("lightcl") == "lightcl"
    assert list(methods.implementations("lightcl")) == ["costcl", "lightcl"]
    assert methods.resolve(Scenario(method="lightcl")).impl == "lightcl"
    assert methods.resolve(Scenario(method="joint")).impl == "costcl"


@pytest.mark.parametrize("run, sparsity", [("dense", 0.0), ("sparse", 0.9)])
def test_lightcl_repository_matches_the_public_code(run, sparsity):
    e = estimate(Scenario(method="lightcl", impl="lightcl", sparsity=sparsity))
    assert (e.step.forward_flops, e.step.backward_flops) == (FORWARD, BACKWARD)
    step, whole = MEASURED[run]["step"], MEASURED[run]["run"]
    assert abs(e.memory.peak_bytes - step) / step < 0.0005
    assert abs(e.memory.run_peak_bytes - whole) / whole < 0.01
    assert e.memory.run_peak_where.startswith("evaluation at")
    assert e.memory.phase == "backward" and "anomaly check" in e.memory.where


def test_lightcl_repository_keeps_float_masks_in_the_dense_run():
    """ChannelPruner's all-ones float32 masks: every conv and head weight plus one
    channel vector per conv (11,169,152 elements, as the public pruner builds them)."""
    s = methods.resolve(Scenario(method="lightcl", impl="lightcl"))
    net = build_model(s.model, s.classes, 3, "meta")
    m = methods.get("lightcl", "lightcl")
    dense = {st.name: st for st in m.stored(s, net)}["pruner.masks"]
    sparse = {st.name: st for st in m.stored(s.replace(sparsity=0.9), net)}["pruner.masks"]
    assert dense.nbytes == 4 * 11_169_152 and dense.dtype == torch.float32
    assert sparse.nbytes == 11_169_152 and sparse.dtype == torch.bool
    costcl = methods.get("lightcl", "costcl").stored(s, net)
    assert "pruner.masks" not in {st.name for st in costcl}


def test_lightcl_repository_sparse_trains_layer3_only_in_task0():
    s = methods.resolve(Scenario(method="lightcl", impl="lightcl", sparsity=0.9))
    net = build_model(s.model, s.classes, 3, "meta")
    m = methods.get("lightcl", "lightcl")
    assert any(n.startswith("layer3.1.") for n in m.trainable(s, net, "first"))
    assert not any(n.startswith("layer3.") for n in m.trainable(s, net, "main"))
    own = methods.get("lightcl", "costcl")
    assert any(n.startswith("layer3.1.") for n in own.trainable(s, net, "main"))


def test_the_clean_step_is_still_costed():
    e = estimate(Scenario(method="lightcl", impl="costcl"))
    assert e.memory.peak_bytes == 97_702_860
    assert (e.step.forward_flops, e.step.backward_flops) == (FORWARD, BACKWARD)


def test_unknown_implementation_lists_the_ones_it_has():
    with pytest.raises(CostclError, match="has no implementation 'mammoth'; it has: costcl, lightcl"):
        methods.resolve(Scenario(method="lightcl", impl="mammoth"))


def test_cli_impl_and_compare(costcl):
    bad = costcl("estimate", "--method", "lightcl", "--impl", "pycil")
    assert bad.returncode == 2 and "it has: costcl, lightcl" in bad.stderr
    assert "Traceback" not in bad.stderr
    out = costcl("compare", "--methods", "lightcl@lightcl,lightcl@costcl", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["scenario"]["impl"] for r in rows] == ["lightcl", "costcl"]
    assert rows[0]["memory"]["run_peak_bytes"] > rows[0]["memory"]["peak_bytes"]
    text = costcl("compare", "--methods", "lightcl@lightcl,lightcl@costcl")
    assert "lightcl@costcl against lightcl@lightcl" in text.stdout
    listing = costcl("methods")
    assert "lightcl (default)" in listing.stdout
