"""DER++ (Buzzega et al., NeurIPS 2020): stored logits and labels, two replay batches.

As Mammoth's current ``derpp``: three forwards (the batch, a replay batch for
the logit loss, another for the label loss), each followed by its own
backward, so only one of them holds activations at a time.  (The LightCL
table counts all three at once: 2P + (B + 2R)a.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import Method, Option, PaperTerms, StepContext, Stored, exemplars
from costmodel.methods.der import logits_store
from costmodel.methods.er import REPLAY_DEFAULTS
from costmodel.scenario import Scenario


DERPP_OPTIONS = {"alpha": Option(0.1, "weight of the logit-matching loss"),
                 "beta": Option(0.5, "weight of the replayed cross-entropy")}


class DERpp(Method):
    name = "derpp"
    summary = "DER++: stored logits and labels, two replay batches per step"
    paper = "Buzzega et al., NeurIPS 2020; Mammoth derpp"
    replays = True
    defaults = REPLAY_DEFAULTS
    memory = "reservoir"
    reservoir = ("x", "y", "logits")
    options = {**DERPP_OPTIONS,
               "separate_backward": Option(True, "backward after each forward (current Mammoth); "
                                           "false: one backward for the summed loss (SparCL, the "
                                           "original DER++ code)")}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        return exemplars(s, s.buffer_size, True, "reservoir buffer") + [logits_store(s)]

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return derpp_step(ctx, x, y, ctx.options.get("separate_backward", True))

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + 2 * s.replay_batch,
                          note="the table counts the batch and both replay batches at once")


def derpp_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, separate: bool) -> torch.Tensor:
    alpha, beta = ctx.options.get("alpha", 0.1), ctx.options.get("beta", 0.5)
    out = ctx.model(x)
    ctx.keep["logits"] = out.detach()
    total = F.cross_entropy(out, y)
    if not ctx.replay_batch:  # an empty buffer: the batch alone
        ctx.backward(total)
        return total.detach()
    if separate:
        ctx.backward(total)
    buf = ctx.replay(ctx.replay_batch)
    loss = alpha * F.mse_loss(ctx.model(buf["x"]), buf["logits"])
    if separate:
        ctx.backward(loss)
        total = total.detach() + loss.detach()
    else:
        total = total + loss
    buf = ctx.replay(ctx.replay_batch)
    loss = beta * F.cross_entropy(ctx.model(buf["x"]), buf["y"])
    if separate:
        ctx.backward(loss)
        return (total + loss.detach()).detach()
    total = total + loss
    ctx.backward(total)
    return total.detach()
