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
from costmodel.methods.pycil import PyCILCode, PyCILMethod, aux_targets
from costmodel.models.expand import ExpandNet
from costmodel.models.pycil import DERNet
from costmodel.models.staged import split
from costmodel.scenario import Scenario


class DERExpand(PyCILMethod):
    name = "der-expand"
    summary = "DER: one new backbone per task, all run every step, old ones frozen"
    paper = "Yan et al., CVPR 2021; PyCIL der"
    grows = 1
    trains = False  # growing networks are costed and validated, not trained here
    reference_impl = "pycil"

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


def pycil_expand_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor,
                      alpha_aux: float | None = None) -> torch.Tensor:
    """DER's and MEMO's later-task step as PyCIL writes it (der.py:180-203, memo.py:216-236):
    the whole output dict stays referenced into the next step."""
    outputs = ctx.model(x)
    logits, aux_logits = outputs["logits"], outputs["aux_logits"]
    loss_clf = F.cross_entropy(logits, y)
    known = known_classes(ctx)
    aux = y.clone()
    aux = torch.where(aux - known + 1 > 0, aux - known + 1, 0)
    loss_aux = F.cross_entropy(aux_logits, aux)
    loss = loss_clf + (loss_aux if alpha_aux is None else alpha_aux * loss_aux)
    ctx.zero_grad()
    ctx.backward(loss)
    PyCILCode.loop_end(ctx, logits, y, aux_logits=aux_logits, aux_targets=aux, loss=loss,
                       loss_clf=loss_clf, loss_aux=loss_aux,
                       **{f"outputs.{k}": v for k, v in outputs.items()})
    return loss.detach()


class DERExpandPyCIL(PyCILCode, DERExpand):
    """DER as PyCIL's models/der.py trains it on its DERNet (utils/inc_net.py:311-375).

    * one PyCIL convnet per task (each with its unused 10-way fc), the old ones frozen
      in eval mode (der.py:52-55, 85-94); each convnet's output dict is dropped once
      its features are taken;
    * ``fc`` reads the concatenated features and is as wide as the classes seen, so its
      FLOPs grow with the square of the tasks; ``aux_fc`` (new classes + 1) reads the
      newest slice of the features;
    * the output dict (logits, aux_logits, features) stays referenced into the next
      step until the next forward returns: the peak is at the end of the forward.
    """

    grows = 2
    cites = ("models/der.py:42-56", "models/der.py:85-94", "models/der.py:172-203",
             "utils/inc_net.py:311-375", "convs/cifar_resnet.py:57-152")

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        return DERNet(lambda: split(build(), self.name), tasks_seen, classes_per_task(s))

    def trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str]:
        new = f"convnets.{len(net.convnets) - 1}."
        return frozenset(n for n, _ in net.named_parameters()
                         if n.startswith((new, "fc.", "aux_fc.")))

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not ctx.task:
            return self.first_step(ctx, x, y)
        return pycil_expand_step(ctx, x, y)
