"""Dark Experience Replay (Buzzega et al., NeurIPS 2020): replay stored logits.

As Mammoth's ``der``: the buffer keeps each exemplar's logits from when it was
stored; a replay batch runs through the model on its own and its outputs are
pulled towards the stored logits (MSE).  One backward for the summed loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import Method, Option, PaperTerms, StepContext, Stored, exemplars
from costmodel.methods.er import REPLAY_DEFAULTS
from costmodel.scenario import Scenario


def logits_store(s: Scenario) -> Stored:
    return Stored("buffer.logits", (s.buffer_size, s.classes), s.torch_dtype, "buffer",
                  "logits of each exemplar when it was stored")


class DER(Method):
    name = "der"
    summary = "Dark Experience Replay: match the logits stored with each exemplar"
    paper = "Buzzega et al., NeurIPS 2020; Mammoth der"
    replays = True
    defaults = REPLAY_DEFAULTS
    memory = "reservoir"
    reservoir = ("x", "logits")
    options = {"alpha": Option(0.3, "weight of the logit-matching loss")}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        return exemplars(s, s.buffer_size, True, "reservoir buffer") + [logits_store(s)]

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = ctx.model(x)
        ctx.keep["logits"] = out.detach()
        loss = F.cross_entropy(out, y)
        if ctx.replay_batch:
            buf = ctx.replay(ctx.replay_batch)
            loss = loss + ctx.options["alpha"] * F.mse_loss(ctx.model(buf["x"]), buf["logits"])
        ctx.backward(loss)
        return loss.detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + s.replay_batch)
