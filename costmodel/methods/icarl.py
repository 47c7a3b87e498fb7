"""iCaRL (Rebuffi et al., CVPR 2017), as PyCIL trains it.

Exemplars mixed into the data; the previous network (a frozen copy) is run on
every batch and its outputs on the old classes distilled at temperature 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from costmodel.methods.base import Option, StepContext, kd_loss, known_classes
from costmodel.methods.pycil import PyCILCode, PyCILMethod
from costmodel.scenario import Scenario


def distilled_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, weigh: bool) -> torch.Tensor:
    """Cross-entropy plus distillation from the teacher (WA weighs the two by old/new)."""
    logits = ctx.model(x)
    loss = F.cross_entropy(logits, y)
    known = known_classes(ctx)
    teacher = ctx.state.get("teacher")
    if teacher is not None and known:
        with torch.no_grad():
            old = teacher(x)
        kd = kd_loss(logits[:, :known], old[:, :known], ctx.options.get("temperature", 2.0))
        if weigh:
            share = known / (known + ctx.classes // ctx.tasks)
            loss = (1 - share) * loss + share * kd
        else:
            loss = loss + kd
    ctx.backward(loss)
    return loss.detach()


class ICaRL(PyCILMethod):
    name = "icarl"
    summary = "iCaRL: exemplars plus distillation from the previous network"
    paper = "Rebuffi et al., CVPR 2017; PyCIL icarl"
    options = {**PyCILMethod.options, "temperature": Option(2.0, "distillation temperature")}
    weigh = False
    """Weigh the two losses by the share of old classes (WA does, iCaRL does not)."""
    reference_impl = "pycil"

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        return 0 if variant == "first" else 1

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return distilled_step(ctx, x, y, weigh=self.weigh)


def pycil_kd_loss(pred: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """PyCIL's _KD_loss (icarl.py:202-205, wa.py:214-217), op for op."""
    pred = torch.log_softmax(pred / temperature, dim=1)
    soft = torch.softmax(soft / temperature, dim=1)
    return -1 * torch.mul(soft, pred).sum() / pred.shape[0]


class ICaRLPyCIL(PyCILCode, ICaRL):
    """iCaRL as PyCIL's models/icarl.py trains it.

    Where its code changes memory or FLOPs (beyond the loop every PyCIL learner shares):

    * the teacher (``_old_network``, copied and frozen after the previous task,
      icarl.py:38-39) is the previous task's network, its classifier 10 classes narrower;
    * it runs after the student's forward, while the student's graph is alive, not
      under no_grad (icarl.py:161-165), but with frozen weights and an input that
      needs no gradient it builds no graph: the peak is inside it, where its convnet
      holds its stem output and the stage maps it is computing (convs/cifar_resnet.py:137-152).
    """

    cites = ("models/icarl.py:38-39", "models/icarl.py:150-176", "models/icarl.py:202-205",
             "utils/inc_net.py:60-140", "convs/cifar_resnet.py:57-152")

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        known = known_classes(ctx)
        if not known:
            return self.first_step(ctx, x, y)
        logits = ctx.model(x)["logits"]
        loss_clf = F.cross_entropy(logits, y)
        loss_kd = pycil_kd_loss(logits[:, :known], ctx.state["teacher"](x)["logits"],
                                ctx.options.get("temperature", 2.0))
        if self.weigh:  # wa.py:161, 178
            share = known / (known + ctx.classes // ctx.tasks)
            loss = (1 - share) * loss_clf + share * loss_kd
        else:
            loss = loss_clf + loss_kd
        ctx.zero_grad()
        ctx.backward(loss)
        self.loop_end(ctx, logits, y, loss=loss, loss_clf=loss_clf, loss_kd=loss_kd)
        return loss.detach()
