"""Online EWC (Schwarz et al., 2018): a quadratic pull towards the last task's weights.

Stores the Fisher information and the anchor weights (one parameter-sized
tensor each).  The penalty is built per parameter with autograd, as PyCIL's
EWC does.  After every task the Fisher is estimated from every training image
on its own (forward and backward at batch 1), as Mammoth's ``ewc_on`` does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import Method, Option, PaperTerms, Phase, StepContext, Stored
from costmodel.scenario import Scenario


def _trained(net: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return list(net.named_parameters())


class EWC(Method):
    name = "ewc"
    summary = "online EWC: Fisher-weighted pull towards the previous weights"
    paper = "Schwarz et al., ICML 2018; Mammoth ewc_on"
    options = {"lambda": Option(10.0, "penalty weight (e_lambda)"),
               "gamma": Option(1.0, "decay of the running Fisher")}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        if variant == "first":
            return []
        n = sum(p.numel() for _, p in _trained(net))
        return [Stored("ewc.fisher", (n,), s.torch_dtype, "method_state", "Fisher information"),
                Stored("ewc.anchor", (n,), s.torch_dtype, "method_state", "weights after the last task")]

    def schedule(self, s: Scenario) -> list[Phase]:
        n = s.images_per_task()
        return [Phase("first task", 1, n, s.epochs, "first", extra_train_samples=n),
                Phase("later tasks", s.tasks - 1, n, s.epochs, "main", first_task=1,
                      extra_train_samples=n)]

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = ctx.model(x)
        loss = F.cross_entropy(out, y)
        if "ewc.fisher" in ctx.state:
            fisher, anchor = ctx.state["ewc.fisher"], ctx.state["ewc.anchor"]
            penalty, offset = 0.0, 0
            for _, p in _trained(ctx.model):
                n = p.numel()
                f, a = fisher[offset:offset + n].view_as(p), anchor[offset:offset + n].view_as(p)
                penalty = penalty + (f * (p - a) ** 2).sum()
                offset += n
            loss = loss + ctx.options.get("lambda", 10.0) * penalty
        ctx.backward(loss)
        return loss.detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size, extra_params=1.0,
                          note="the table counts one parameter-sized tensor for EWC; online EWC "
                               "keeps two (Fisher and anchor weights) and estimates the Fisher "
                               "over every image after each task, which the table does not count")
