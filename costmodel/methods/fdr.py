"""Function Distance Regularization (Benjamin et al., ICLR 2019).

As Mammoth's ``fdr``: a plain step on the batch, then a second update on a
replay batch pulling the softmax outputs towards the stored ones.  costcl runs
both backward passes in one step with one optimizer update (Mammoth updates
twice; the second update adds no FLOPs and no memory at the peak).  The buffer
is filled at the end of each task, so the first task does not replay.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import (Method, PaperTerms, Phase, StepContext, Stored, exemplars,
                                    first_then_later)
from costmodel.methods.er import REPLAY_DEFAULTS
from costmodel.scenario import Scenario


class FDR(Method):
    name = "fdr"
    summary = "Function Distance Regularization: match stored softmax outputs on replay"
    paper = "Benjamin et al., ICLR 2019; Mammoth fdr"
    replays = True
    defaults = REPLAY_DEFAULTS
    trains = False  # its buffer is refilled between tasks; not written for the trainer

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        if variant == "first":
            return []
        return exemplars(s, s.buffer_size, True, "filled at the end of each task") + [
            Stored("buffer.logits", (s.buffer_size, s.classes), s.torch_dtype, "buffer",
                   "outputs of each exemplar when it was stored"),
            Stored("buffer.task", (s.buffer_size,), torch.int64, "buffer", "task of each exemplar")]

    def schedule(self, s: Scenario) -> list[Phase]:
        return first_then_later(s, later={"extra_forward_samples": s.buffer_size})

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(ctx.model(x), y)
        ctx.backward(loss)
        if ctx.variant == "first":
            return loss.detach()
        buf = ctx.replay(ctx.replay_batch)
        out = F.softmax(ctx.model(buf["x"]), dim=1)
        reg = torch.norm(out - F.softmax(buf["logits"], dim=1), 2, 1).mean()
        ctx.backward(reg)
        return (loss.detach() + reg.detach()).detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + s.replay_batch,
                          note="the table counts FDR's replay batch with the batch (as ER's)")
