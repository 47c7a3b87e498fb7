"""Replay (PyCIL's baseline): exemplars mixed into the data, cross-entropy only."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from costmodel.methods.base import StepContext
from costmodel.methods.pycil import PyCILCode, PyCILMethod


class Replay(PyCILMethod):
    name = "replay"
    summary = "exemplar replay: the memory is mixed into every task's data"
    paper = "PyCIL replay (Rebuffi et al.'s memory without distillation)"
    later_epochs = 70
    reference_impl = "pycil"

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(ctx.model(x), y)
        ctx.backward(loss)
        return loss.detach()


class ReplayPyCIL(PyCILCode, Replay):
    """Replay as PyCIL's models/replay.py trains it: the shared PyCIL loop and network,
    cross-entropy only (replay.py:150-170)."""

    cites = ("models/replay.py:150-170", "utils/inc_net.py:60-140", "convs/cifar_resnet.py:57-152")

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.first_step(ctx, x, y)  # every task's step is _init_train's
