"""PackNet (Mallya & Lazebnik, CVPR 2018): one network, weights packed task by task.

Each task trains on the weights no earlier task owns, prunes a share of them
by magnitude, and retrains the survivors; a byte per weight records which task
owns it.  Inference selects the task's weights, so the task must be known:
PackNet cannot run under class-incremental evaluation.  Gradients of weights
owned by earlier tasks are zeroed before each update (dense kernels throughout).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import (Method, Option, PaperTerms, Phase, StepContext, Stored,
                                    known_classes)
from costmodel.scenario import Scenario


class PackNet(Method):
    name = "packnet"
    summary = "PackNet: train, prune and retrain each task in the weights left free"
    paper = "Mallya & Lazebnik, CVPR 2018"
    settings = ("task-il",)
    trains = False
    settings_why = "PackNet selects each task's weights by task identity"
    options = {"prune": Option(0.5, "share of the free weights pruned after each task", maximum=1.0),
               "retrain_epochs": Option(0, "epochs retraining after pruning (0: a quarter of --epochs)")}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        n = sum(p.numel() for p in net.parameters() if p.dim() > 1)
        return [Stored("packnet.owner", (n,), torch.uint8, "method_state",
                       "task that owns each prunable weight")]

    def schedule(self, s: Scenario) -> list[Phase]:
        n = s.images_per_task()
        retrain = int(s.options.get("retrain_epochs") or max(1, s.epochs // 4))
        return [Phase("train", s.tasks, n, s.epochs), Phase("retrain after pruning", s.tasks, n, retrain)]

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = ctx.classes // ctx.tasks
        lo = known_classes(ctx)
        loss = F.cross_entropy(ctx.model(x)[:, lo:lo + k], y - lo)
        ctx.backward(loss)
        owner = ctx.state.get("packnet.owner")
        if owner is not None:
            offset = 0
            for p in ctx.model.parameters():
                if p.dim() > 1:
                    if p.grad is not None:
                        p.grad.masked_fill_(owner[offset:offset + p.numel()].view_as(p) < ctx.task + 1, 0)
                    offset += p.numel()
        return loss.detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size,
                          note="packnet is not in the LightCL table; its ownership bytes are not "
                               "parameter-sized floats and are left out, as the table leaves masks out")
