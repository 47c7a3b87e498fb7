"""WA, Weight Aligning (Zhao et al., CVPR 2020), as PyCIL trains it.

iCaRL's step with the two losses weighed by the share of old classes; after
each task the new classes' classifier weights are rescaled (no FLOPs to speak of).
"""
from __future__ import annotations

import torch

from costmodel.methods.base import Option, StepContext
from costmodel.methods.icarl import distilled_step
from costmodel.methods.pycil import PyCILMethod
from costmodel.scenario import Scenario


class WA(PyCILMethod):
    name = "wa"
    summary = "Weight Aligning: distillation, then rescale the new classes' weights"
    paper = "Zhao et al., CVPR 2020; PyCIL wa"
    options = {**PyCILMethod.options, "temperature": Option(2.0, "distillation temperature")}

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        return 0 if variant == "first" else 1

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return distilled_step(ctx, x, y, weigh=True)
