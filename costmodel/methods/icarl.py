"""iCaRL (Rebuffi et al., CVPR 2017), as PyCIL trains it.

Exemplars mixed into the data; the previous network (a frozen copy) is run on
every batch and its outputs on the old classes distilled at temperature 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from costmodel.methods.base import Option, StepContext, kd_loss, known_classes
from costmodel.methods.pycil import PyCILMethod
from costmodel.scenario import Scenario


def distilled_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, weigh: bool) -> torch.Tensor:
    """Cross-entropy plus distillation from the teacher (WA weighs the two by old/new)."""
    logits = ctx.model(x)
    loss = F.cross_entropy(logits, y)
    known = known_classes(ctx)
    teacher = ctx.state.get("teacher")
    if teacher is not None and known:
        with torch.no_grad():
            old = teacher(x)
        kd = kd_loss(logits[:, :known], old[:, :known], ctx.options.get("temperature", 2.0))
        if weigh:
            share = known / (known + ctx.classes // ctx.tasks)
            loss = (1 - share) * loss + share * kd
        else:
            loss = loss + kd
    ctx.backward(loss)
    return loss.detach()


class ICaRL(PyCILMethod):
    name = "icarl"
    summary = "iCaRL: exemplars plus distillation from the previous network"
    paper = "Rebuffi et al., CVPR 2017; PyCIL icarl"
    options = {**PyCILMethod.options, "temperature": Option(2.0, "distillation temperature")}
    weigh = False
    """Weigh the two losses by the share of old classes (WA does, iCaRL does not)."""

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        return 0 if variant == "first" else 1

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return distilled_step(ctx, x, y, weigh=self.weigh)
