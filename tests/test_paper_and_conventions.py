"""The paper convention and the other counters' conventions."""
from __future__ import annotations

import pytest

from costmodel import Scenario
from costmodel.estimation import estimate
from costmodel.paper import _round_half_up

MIB = 2**20


def test_paper_sgd_is_153_4_mib():
    # 2P + 32a with P = 42.6253 MiB and a = 2.13 MiB (FACTS.md section 2).
    e = estimate(Scenario(method="sgd", batch_size=32), convention="paper")
    assert round(e.memory.peak_bytes / MIB, 1) == 153.4
    assert e.memory.breakdown_bytes["parameters"] == 11_173_962 * 4
    assert e.memory.breakdown_bytes["gradients"] == 11_173_962 * 4
    assert e.memory.breakdown_bytes["activations"] == round(32 * 2.13 * MIB)
    assert e.memory.breakdown_bytes["optimizer_state"] == 0


def test_paper_activation_rounding_is_the_tables():
    assert _round_half_up(2.125, 2) == 2.13   # Python's round() would give 2.12
    e = estimate(Scenario(method="sgd", batch_size=32, dataset="tinyimagenet", num_classes=10),
                 convention="paper")
    # 64x64 images count 4 x 2.13 MiB each; the table's 357.9 MiB.
    assert e.memory.breakdown_bytes["activations"] == round(32 * 4 * 2.13 * MIB)
    assert round(e.memory.peak_bytes / MIB, 1) == 357.9


def test_paper_flops_are_three_forwards_per_image():
    s = Scenario(method="sgd", batch_size=32, holdout=0.1)
    e = estimate(s, convention="paper")
    # 45,000 images x 50 epochs x 3 x 2 x 555,422,720 MACs = 7.5e15 (the table's SGD cell)
    assert e.run.total_flops == 45_000 * 50 * 3 * 2 * 555_422_720
    assert e.step.forward_flops == 32 * 2 * 555_422_720
    assert e.step.backward_flops == 2 * e.step.forward_flops


def test_paper_frozen_prefix_counts_only_the_trainable_part():
    full = estimate(Scenario(batch_size=32), convention="paper")
    frozen = estimate(Scenario(batch_size=32, train_from="layer4"), convention="paper")
    assert frozen.memory.breakdown_bytes["parameters"] == full.memory.breakdown_bytes["parameters"]
    # layer4 and the head: 8,398,858 parameters, 4 bytes each
    assert frozen.trainable_params == 8_398_858
    assert frozen.memory.breakdown_bytes["gradients"] == 8_398_858 * 4
    # layer4's four main-path convs: 4 x 512x4x4 floats per sample = 0.125 MiB (rounded 0.13)
    assert frozen.memory.breakdown_bytes["activations"] == round(32 * 0.13 * MIB)
    assert frozen.step.forward_flops == full.step.forward_flops
    assert frozen.step.backward_flops < full.step.backward_flops / 3


@pytest.mark.parametrize("tool", ["fvcore", "thop"])
def test_mac_conventions_halve_conv_and_linear(tool):
    torch_e = estimate(Scenario(batch_size=4))
    mac_e = estimate(Scenario(batch_size=4), flops_convention=tool)
    # conv + linear MACs, plus the batch-norm work the tool counts (4 x 614,400 elements
    # per image for thop, 5 x for fvcore in training mode)
    per_element = {"fvcore": 5, "thop": 4}[tool]
    assert mac_e.step.forward_flops == torch_e.step.forward_flops // 2 + 4 * per_element * 614_400
    assert mac_e.step.backward_flops == torch_e.step.backward_flops // 2


def test_unknown_conventions_are_one_line_errors():
    from costmodel.errors import CostclError
    with pytest.raises(CostclError, match="unknown convention 'papr'; did you mean paper"):
        estimate(Scenario(), convention="papr")
    with pytest.raises(CostclError, match="unknown FLOPs convention"):
        estimate(Scenario(), flops_convention="ptflops")
