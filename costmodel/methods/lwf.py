"""LwF (Li & Hoiem, 2017): distil the previous model's outputs on the new data.

Keeps a frozen copy of the network (the teacher) and runs it on every batch
after the student, as PyCIL's LwF does: soft cross-entropy at temperature T on
the old classes, plain cross-entropy on the new ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from costmodel.methods.base import (Method, Option, PaperTerms, Phase, StepContext,
                                    first_then_later, kd_loss, known_classes)
from costmodel.scenario import Scenario


class LwF(Method):
    name = "lwf"
    summary = "Learning without Forgetting: distil a frozen copy's outputs, no exemplars"
    paper = "Li & Hoiem, TPAMI 2017; PyCIL lwf"
    options = {"temperature": Option(2.0, "distillation temperature T"),
               "lamda": Option(3.0, "weight of the distillation loss")}

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        return 0 if variant == "first" else 1

    def schedule(self, s: Scenario) -> list[Phase]:
        return first_then_later(s)

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = ctx.model(x)
        known = known_classes(ctx)
        teacher = ctx.state.get("teacher")
        if teacher is None or known == 0:
            loss = F.cross_entropy(logits, y)
        else:
            with torch.no_grad():
                old = teacher(x)
            kd = kd_loss(logits[:, :known], old[:, :known], ctx.options.get("temperature", 2.0))
            loss = F.cross_entropy(logits[:, known:], (y - known).clamp_(min=0)) \
                + ctx.options.get("lamda", 3.0) * kd
        ctx.backward(loss)
        return loss.detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size, extra_params=1.0,
                          note="lwf is not in the LightCL table; its frozen teacher counts as one "
                               "parameter-sized tensor, its forward as one more per sample")
