"""Replay (PyCIL's baseline): exemplars mixed into the data, cross-entropy only."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from costmodel.methods.base import StepContext
from costmodel.methods.pycil import PyCILMethod


class Replay(PyCILMethod):
    name = "replay"
    summary = "exemplar replay: the memory is mixed into every task's data"
    paper = "PyCIL replay (Rebuffi et al.'s memory without distillation)"
    later_epochs = 70

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(ctx.model(x), y)
        ctx.backward(loss)
        return loss.detach()
