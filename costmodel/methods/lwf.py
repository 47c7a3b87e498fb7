"""LwF (Li & Hoiem, 2017): distil the previous model's outputs on the new data.

Keeps a frozen copy of the network (the teacher) and runs it on every batch
after the student, as PyCIL's LwF does: soft cross-entropy at temperature T on
the old classes, plain cross-entropy on the new ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.codebases.mammoth import MAMMOTH, loop_inputs
from costmodel.methods.base import (Method, Option, PaperTerms, Phase, StepContext, Stored,
                                    first_then_later, kd_loss, known_classes)
from costmodel.scenario import Scenario


class LwF(Method):
    name = "lwf"
    summary = "Learning without Forgetting: distil a frozen copy's outputs, no exemplars"
    paper = "Li & Hoiem, TPAMI 2017; PyCIL lwf"
    options = {"temperature": Option(2.0, "distillation temperature T"),
               "lamda": Option(3.0, "weight of the distillation loss")}

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        return 0 if variant == "first" else 1

    def schedule(self, s: Scenario) -> list[Phase]:
        return first_then_later(s)

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = ctx.model(x)
        known = known_classes(ctx)
        teacher = ctx.state.get("teacher")
        if teacher is None or known == 0:
            loss = F.cross_entropy(logits, y)
        else:
            with torch.no_grad():
                old = teacher(x)
            kd = kd_loss(logits[:, :known], old[:, :known], ctx.options.get("temperature", 2.0))
            loss = F.cross_entropy(logits[:, known:], (y - known).clamp_(min=0)) \
                + ctx.options.get("lamda", 3.0) * kd
        ctx.backward(loss)
        return loss.detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size, extra_params=1.0,
                          note="lwf is not in the LightCL table; its frozen teacher counts as one "
                               "parameter-sized tensor, its forward as one more per sample")


class LwFMammoth(LwF):
    """Mammoth's ``lwf`` (models/lwf.py): no teacher network during the steps.

    At a later task's start (lwf.py:41-68), after a warm-up of the new classifier on
    frozen features, the network's logits of every training image of the task
    (un-augmented, under no_grad) are computed once and kept on the host, as a
    ``logits`` field of the task's dataset; the loop hands each batch its rows, moved
    to the device (utils/training.py:100-106).  A step (lwf.py:70-82) is one forward
    and one backward: cross-entropy over the classes seen so far plus ``alpha`` times
    a KL-like loss between the temperature-smoothed softmaxes of the stored and the
    new logits over the past classes (lwf.py:11-17), added in place.  So the step
    costs fine-tuning's FLOPs; its extra memory is the per-batch logits and a few
    [B, past classes] tensors.  The loop's un-augmented batch is an input too.

    ``lamda`` is Mammoth's ``--alpha``, ``temperature`` its ``--softmax_temp``.  The
    warm-up and the logits pass are work between steps under no_grad (features) that
    stays below the step's peak; they are not costed as separate works.  costcl's
    trainer cannot hand per-image stored logits to a step, so this implementation is
    costed, not trained (``costcl train`` runs ``--impl costcl``).
    """

    impl = "mammoth"
    codebase = MAMMOTH
    cites = ("models/lwf.py:11-17", "models/lwf.py:41-82", "utils/training.py:100-106")
    trains = False

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        return 0

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        if variant == "first":
            return []
        return [Stored("lwf.logits", (s.images_per_task(), s.classes), torch.float32,
                       "method_state", "the network's logits of every training image of the "
                       "task, computed at its start (lwf.py:58-66), on the host", where="host")]

    def batch_inputs(self, s: Scenario, variant: str = "main") -> dict:
        out = loop_inputs(s)
        if variant != "first":  # the loader's extra `logits` field (lwf.py:66-67)
            out["logits"] = ((s.classes,), torch.float32)
        return out

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        past = known_classes(ctx)  # n_past_classes
        seen = past + ctx.classes // ctx.tasks  # n_seen_classes
        outputs = ctx.model(x)
        loss = F.cross_entropy(outputs[:, :seen], y)
        logits = ctx.inputs.get("logits")
        if logits is not None:
            temp = ctx.options.get("temperature", 2.0)
            old = smooth(F.softmax(logits[:, :past], dim=1), temp, 1)
            new = smooth(F.softmax(outputs[:, :past], dim=1), temp, 1)
            loss += ctx.options.get("lamda", 3.0) * modified_kl_div(old, new)
        ctx.backward(loss)
        return loss.detach()


def smooth(logits: torch.Tensor, temp: float, dim: int) -> torch.Tensor:
    """lwf.py:11-13."""
    log = logits ** (1 / temp)
    return log / torch.sum(log, dim).unsqueeze(1)


def modified_kl_div(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """lwf.py:16-17."""
    return -torch.mean(torch.sum(old * torch.log(new), 1))
