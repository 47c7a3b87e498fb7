"""torchvision models that do not build on meta, or return aux-logit tuples, still cost.

RegNets read tensor values while constructing (``.tolist()``): built with their
parameters on meta.  GoogLeNet and Inception-v3 are built without auxiliary heads
(see :mod:`costmodel.models.registry`).  Each step's FLOPs are checked against
FlopCounterMode on the same step (meta tensors); ``benchmarks/torchvision_sweep.py``
does this for all 80 models.
"""
from __future__ import annotations

import pytest
import torch

from costmodel import Scenario
from costmodel.errors import CostclError
from costmodel.estimation import estimate
from costmodel.models.registry import build_model, build_route
from tests.conftest import measured_flops

CASES = {  # the smallest inputs each model takes: fast on two cores
    "regnet_y_400mf": 64,
    "googlenet": 15,  # its weights' min_size
    "inception_v3": 75,  # its weights' min_size
}


@pytest.mark.parametrize("name,side", CASES.items())
def test_costs_and_flops_equal_flop_counter(name, side):
    e = estimate(Scenario(model=f"torchvision:{name}", method="sgd", input_size=(3, side, side),
                          num_classes=10, batch_size=2, tasks=1))  # one task: one step traced
    assert (e.step.forward_flops, e.step.backward_flops) == measured_flops(e)
    assert e.step.forward_flops > 0


def test_regnet_builds_with_parameters_on_meta_after_meta_fails():
    model = build_model("torchvision:regnet_y_400mf", 10)
    assert build_route("torchvision:regnet_y_400mf") == "meta-params"
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.is_meta for t in tensors)
    assert sum(p.numel() for p in model.parameters()) == 3_907_554  # as built on the CPU


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_aux_heads_are_left_out(name):
    model = build_model(f"torchvision:{name}", 10).train()
    out = model(torch.empty(2, 3, 299, 299, device="meta"))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "tvsweep_nets.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def reads_values(num_classes=10):\n"
        "    width = int(torch.arange(4).sum().item())  # fails on meta, fine on the CPU\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, width), nn.ReLU(),\n"
        "                         nn.Linear(width, num_classes))\n"
        "def broken(num_classes=10):\n"
        "    raise RuntimeError('no such layer\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tvsweep_nets"


def test_any_model_that_reads_values_falls_back(factories):
    model = build_model(f"{factories}:reads_values", 10)
    assert build_route(f"{factories}:reads_values") == "meta-params"
    assert all(p.is_meta for p in model.parameters())
    assert model[1].out_features == 6


def test_a_model_failing_on_the_cpu_too_is_one_line(factories):
    with pytest.raises(CostclError) as info:
        build_model(f"{factories}:broken", 10)
    assert str(info.value) == (f"model factory '{factories}:broken' raised RuntimeError: "
                               "no such layer")


def test_a_model_asserting_on_its_input_names_the_model_not_the_method(costcl):
    r = costcl("estimate", "--model", "torchvision:vit_b_16", "--input-size", "3,384,384",
               "--batch-size", "2", "--no-cache")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert ("model 'torchvision:vit_b_16' on a 3x384x384 input fails in layer <model> "
            "(VisionTransformer) at batch 2: AssertionError: Wrong image height!") in lines[0]
