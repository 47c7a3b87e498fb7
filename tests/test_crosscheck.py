"""costcl's conv and linear counts equal fvcore's, thop's and FlopCounterMode's."""
from __future__ import annotations

import pytest

from costmodel import Scenario
from lightcl.crosscheck import crosscheck


@pytest.mark.parametrize("model,dataset", [("resnet18-cifar", "cifar10"),
                                           ("mobilenet_v2", "imagenet100")])
def test_conv_and_linear_agree_with_every_tool(model, dataset):
    c = crosscheck(Scenario(model=model, dataset=dataset))
    for tool in ("torch", "fvcore", "thop"):
        for cat in ("conv", "linear"):
            assert c.measured[tool][cat] == c.costcl[tool][cat], (tool, cat)
    # MACs are half of FlopCounterMode's FLOPs
    assert c.measured["fvcore"]["conv"] * 2 == c.measured["torch"]["conv"]


def test_ops_only_a_tool_counts_are_named():
    c = crosscheck(Scenario(model="mobilenet_v2", dataset="imagenet100"))
    # mobilenet_v2 pools with F.adaptive_avg_pool2d: fvcore sees the aten op, costcl's
    # module-based rule does not; the difference is named, not hidden.
    assert "adaptive_avg_pool2d" in c.measured["fvcore"]
    assert any("fvcore counts adaptive_avg_pool2d" in n for n in c.notes)
    # where costcl models the tool's rule, the counts agree
    assert c.measured["thop"]["batch_norm"] == c.costcl["thop"]["batch_norm"]
    assert c.measured["fvcore"]["batch_norm"] == c.costcl["fvcore"]["batch_norm"]
