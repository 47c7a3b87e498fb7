"""On-device incremental learning by weight freezing (Wang et al., Yunnan University).

Per new task: (1) the importance of every weight for the old classes,
``I = (g * w)^2``, from one forward and backward pass over the exemplar memory;
the top ``freeze_rate`` of each weight tensor is frozen; (2) the new classes
are learned for a few epochs with only the unfrozen weights updated;
(3) fine-tuning on the new data and the exemplars with distillation from the
model before the task (soft targets at temperature T).

Freezing is per weight, not per tensor, so PyTorch still computes every
gradient (they are masked before the update): no FLOP is saved at runtime and
the masks cost a byte per weight.  The paper gives no epoch counts; costcl's
defaults (a tenth of the epochs for learning, all of them for fine-tuning) are
options.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import (Method, Option, PaperTerms, Phase, StepContext, Stored,
                                    TaskRun, exemplars, kd_loss, known_classes)
from costmodel.scenario import Scenario


class ODILFreeze(Method):
    name = "odil-freeze"
    summary = "weight freezing by importance (g*w)^2, then replay fine-tuning with distillation"
    paper = "Efficient On-Device Incremental Learning by Weight Freezing (Wang et al., Yunnan University)"
    defaults = {"dataset": "cifar100", "optimizer": "sgd-momentum", "buffer_size": 2000}
    memory = "per-class"
    options = {"freeze_rate": Option(0.5, "share of each weight tensor frozen as important", maximum=1.0),
               "learn_epochs": Option(0, "epochs learning the new classes (0: a tenth of --epochs)"),
               "finetune_epochs": Option(0, "epochs of replay fine-tuning (0: --epochs)"),
               "temperature": Option(2.0, "distillation temperature")}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        if variant == "first":
            return []
        n = sum(p.numel() for p in net.parameters())
        return exemplars(s, s.buffer_size, False, "exemplar memory, uint8 images") + [
            Stored("odil.frozen", (n,), torch.bool, "method_state", "which weights are frozen")]

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        return 1 if variant == "main" else 0

    def schedule(self, s: Scenario) -> list[Phase]:
        n, m = s.images_per_task(), s.buffer_size
        learn = int(s.options.get("learn_epochs") or max(1, s.epochs // 10))
        tune = int(s.options.get("finetune_epochs") or s.epochs)
        return [Phase("first task", 1, n, s.epochs, "first"),
                Phase("learn new classes (frozen weights)", s.tasks - 1, n, learn, "learn",
                      first_task=1, extra_train_samples=m),
                Phase("fine-tune with replay and distillation", s.tasks - 1, n + m, tune, "main",
                      first_task=1, mixed=True)]

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = ctx.model(x)
        loss = F.cross_entropy(logits, y)
        teacher, known = ctx.state.get("teacher"), known_classes(ctx)
        if teacher is not None and known:
            with torch.no_grad():
                old = teacher(x)
            loss = loss + kd_loss(logits[:, :known], old[:, :known], ctx.options.get("temperature", 2.0))
        ctx.backward(loss)
        frozen = ctx.state.get("odil.frozen")
        if frozen is not None:  # frozen weights keep their values: mask their gradients
            offset = 0
            for p in ctx.model.parameters():
                if p.grad is not None:
                    p.grad.masked_fill_(frozen[offset:offset + p.numel()].view_as(p), 0)
                offset += p.numel()
        return loss.detach()

    def begin_task(self, run: TaskRun) -> None:
        """Freeze the weights most important to the old classes: (g*w)^2 over the memory."""
        if run.task == 0:
            return
        net = run.net
        net.zero_grad(set_to_none=True)
        for x, y in run.memory_batches():
            F.cross_entropy(net(x), y).backward()
        rate = float(run.scenario.options.get("freeze_rate", 0.5))
        frozen = []
        for p in net.parameters():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            importance = (g * p.detach()).pow(2).flatten()
            k = int(importance.numel() * rate)
            mask = torch.zeros_like(importance, dtype=torch.bool)
            if k:
                mask[importance.topk(k).indices] = True
            frozen.append(mask)
        net.zero_grad(set_to_none=True)
        run.state["odil.frozen"] = torch.cat(frozen)

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size, extra_params=1.0,
                          note="odil-freeze is not in the LightCL table: the teacher counts as one "
                               "parameter-sized tensor; per-weight freezing saves no dense FLOP")
