"""Fine-tuning ("SGD" in the CL tables): each task in turn, nothing against forgetting."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from costmodel.codebases.mammoth import MAMMOTH, loop_inputs
from costmodel.methods.base import Method, StepContext
from costmodel.scenario import Scenario


class FineTune(Method):
    name = "sgd"
    summary = "fine-tuning: train on each task in turn, no defence against forgetting"
    paper = "the lower bound of every CL table (e.g. LightCL, ASP-DAC 2025, Table 1)"
    reference_impl = "mammoth"

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cross_entropy_step(ctx, x, y)


def cross_entropy_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The batch alone, cross-entropy, one backward; the logits stay referenced through the
    backward, as in Mammoth's and PyCIL's training loops."""
    out = ctx.model(x)
    loss = F.cross_entropy(out, y)
    ctx.backward(loss)
    return loss.detach()


class FineTuneMammoth(FineTune):
    """Mammoth's ``sgd``: zero_grad, one forward, cross-entropy, one backward
    (models/sgd.py:24-34), the outputs referenced through the backward.  What differs
    from the clean step is the loop's: the un-augmented batch is on the device too
    (:mod:`costmodel.codebases.mammoth`)."""

    impl = "mammoth"
    codebase = MAMMOTH
    cites = ("models/sgd.py:24-34",)

    def batch_inputs(self, s: Scenario, variant: str = "main") -> dict:
        return loop_inputs(s)
