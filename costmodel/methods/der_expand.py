"""DER, Dynamically Expandable Representation (Yan et al., CVPR 2021), as PyCIL trains it.

One new backbone per task; the old ones are frozen in eval mode but still run
on every batch; the classifier reads all features, an auxiliary head the new
ones (new classes + one "old" class).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import PaperTerms, StepContext, classes_per_task, known_classes
from costmodel.methods.pycil import PyCILMethod, aux_targets
from costmodel.models.expand import ExpandNet
from costmodel.models.staged import split
from costmodel.scenario import Scenario


class DERExpand(PyCILMethod):
    name = "der-expand"
    summary = "DER: one new backbone per task, all run every step, old ones frozen"
    paper = "Yan et al., CVPR 2021; PyCIL der"
    grows = 1
    trains = False  # growing networks are costed and validated, not trained here

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        return ExpandNet(lambda: split(build(), self.name), tasks_seen, s.classes, classes_per_task(s))

    def trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str]:
        new = f"backbones.{len(net.backbones) - 1}."
        return frozenset(n for n, _ in net.named_parameters()
                         if n.startswith((new, "fc.", "aux_fc.")))

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return expand_step(ctx, x, y)

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size, weights=None, flops_factor=(s.tasks + 1) / 2,
                          note="der-expand is not in the LightCL table: the network as built for "
                               "the last task (T backbones); (T+1)/2 of them run on average")


def expand_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on all features, plus the auxiliary head's after the first task."""
    logits, aux = ctx.model(x)
    loss = F.cross_entropy(logits, y)
    if ctx.task:
        loss = loss + F.cross_entropy(aux, aux_targets(y, known_classes(ctx)))
    ctx.backward(loss)
    return loss.detach()
