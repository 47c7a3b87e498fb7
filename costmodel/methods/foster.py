"""FOSTER (Wang et al., ECCV 2022), as PyCIL's models/foster.py trains it.

Cited at G-U-N/PyCIL@87cc4110 (:mod:`costmodel.codebases.pycil`); the method is its
PyCIL implementation, with ``exps/foster.json``'s settings except its split: costcl
runs it B0Inc10 like the other PyCIL learners (the json's is B50Inc10).

* FOSTERNet (utils/inc_net.py:495-605): after the first task, two PyCIL convnets, the
  old one (the last task's compressed student) frozen in eval mode (foster.py:51-55,
  92-96); ``fc`` over both features (as wide as the classes seen), ``fe_fc`` over the
  new one's (as wide too) and ``oldfc`` (the last task's ``fc``, frozen) over the old
  one's.  The frozen backbone and ``oldfc`` still hold the gradients of the
  compression that trained them last (freezing does not free a ``.grad``);
* boosting (foster.py:213-258), the steady step: the balanced cross-entropy of
  ``logits / per_cls_weights``, the cross-entropy of ``fe_logits`` and KD at T = 2 from
  ``old_logits``; ``zero_grad`` after the forward;
* compression (foster.py:288-336), after boosting, on the same data: a new FOSTERNet with
  one convnet (the student, all of it trained) is distilled from the boosting network
  (eval, ``no_grad``) with the class-balanced KD ``BKD``.  The boosting network's
  gradients and its optimizer's momentum stay allocated through it: ``_train``'s frame
  holds that optimizer (foster.py:129-146, 167);
* herding and NME class means as every PyCIL learner, on the boosting network (its
  features are 128 wide); the memory is fixed, 20 exemplars per class (foster.json),
  so ``--buffer-size`` is the last task's memory (20 x 90 = 1,800 by default) and task
  ``t`` holds ``t / (T - 1)`` of it.

costcl builds one network per task for both later steps, so the compression step runs
its student on stand-ins of the same shapes: the frozen old backbone (the student's
convnet starts as its copy, foster.py:298-300) and ``fe_fc`` (64 x classes, the
student's ``fc`` and ``fe_fc``); the student's own weights and batch-norm statistics
are counted as stored state, as are the boosting network's gradients and momentum.
Memory and FLOPs are the student's; only the names differ.  Two spellings keep
costcl's engine from counting weight or input gradients that backward never computes
(it counts them for every op that reads a trainable tensor): the boosting network runs
as the teacher with detached weights (under ``no_grad`` the same computation), and
``old_logits`` is detached in the forward rather than by the loop (foster.py:230; with
``oldfc`` frozen its graph saves nothing but the weight).

Epochs (foster.json): 200 on the first task, 170 of boosting and 130 of compression
on every later one; batch 128, SGD with momentum.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import (Option, Phase, StepContext, Stored, classes_per_task,
                                    known_classes)
from costmodel.methods.icarl import pycil_kd_loss
from costmodel.methods.pycil import PyCILCode, PyCILMethod, known_before
from costmodel.models.pycil import ConvNet
from costmodel.models.staged import Stages, split
from costmodel.scenario import Scenario

class FOSTERNet(nn.Module):
    """utils/inc_net.py:495-532 after ``update_fc`` for ``tasks`` tasks (at most two convnets:
    each later task starts from the last one's compressed student, foster.py:40-45)."""

    def __init__(self, parts: Callable[[], Stages], cpt: int, tasks: int) -> None:
        super().__init__()
        self.convnets = nn.ModuleList(ConvNet(parts()) for _ in range(min(tasks, 2)))
        self.out_dim = d = self.convnets[0].out_dim
        self.fc = nn.Linear(d * len(self.convnets), cpt * tasks)
        self.fe_fc = nn.Linear(d, cpt * tasks)
        self.oldfc = nn.Linear(d, cpt * (tasks - 1)) if tasks > 1 else None

    def feature_dim(self, tasks: int) -> int:
        return self.out_dim * min(tasks, 2)

    def train(self, mode: bool = True) -> FOSTERNet:
        """FOSTER.train (foster.py:92-96): the old backbone stays in eval mode."""
        super().train(mode)
        if len(self.convnets) > 1:
            self.convnets[0].eval()
        return self

    def forward(self, x: torch.Tensor) -> dict:
        features = torch.cat([convnet(x)["features"] for convnet in self.convnets], 1)
        out = {"logits": self.fc(features)}
        fe_logits = self.fe_fc(features[:, -self.out_dim:])
        out.update({"fe_logits": fe_logits, "features": features})
        if self.oldfc is not None:  # detached here, not by the loop (foster.py:230): see step
            out["old_logits"] = self.oldfc(features[:, :-self.out_dim].detach())
        out["eval_logits"] = out["logits"]
        return out


class FOSTER(PyCILCode, PyCILMethod):
    name = "foster"
    summary = "FOSTER: boost with a second backbone over the frozen old one, then compress into one"
    paper = "Wang et al., ECCV 2022; PyCIL foster"
    reference_impl = "pycil"
    later_epochs = 170
    grows = 0
    """Two different later steps (boosting, compression), each traced at the last task; the
    run's FLOPs take every later task at its classifier widths (the engine's growth
    polynomial is the main step's alone), overstating them by under 1e-4."""
    cites = ("models/foster.py:18-31", "models/foster.py:37-96", "models/foster.py:98-167",
             "models/foster.py:169-258", "models/foster.py:288-336", "models/foster.py:402-413",
             "utils/inc_net.py:495-605", "exps/foster.json", "models/base.py:287-384",
             "convs/cifar_resnet.py:57-152")
    options = {"init_epochs": Option(200, "epochs of the first task (init_epochs)"),
               "compression_epochs": Option(130, "epochs of compression after boosting"),
               "temperature": Option(2.0, "distillation temperature T")}

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        return FOSTERNet(lambda: split(build(), self.name), classes_per_task(s), tasks_seen)

    def trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str] | None:
        if variant == "first":
            return None
        keep = ("convnets.0.", "fe_fc.") if variant == "compress" else ("convnets.1.", "fc.", "fe_fc.")
        return frozenset(n for n, _ in net.named_parameters() if n.startswith(keep))

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        out = super().stored(s, net, variant)
        if not known_before(s, variant):
            return out
        out.append(Stored("per_cls_weights", (s.classes,), torch.float32, "method_state",
                          "effective-number class weights (foster.py:115-127, 156-166)"))

        def numel(*prefixes: str, skip: str = "convnets.0.fc.") -> int:
            return sum(p.numel() for n, p in net.named_parameters()
                       if n.startswith(prefixes) and not n.startswith((skip, "convnets.1.fc.")))
        stale = numel("convnets.0.", "oldfc.")
        if variant != "compress":
            out.append(Stored("foster.stale_grads", (stale,), torch.float32, "method_state",
                              "gradients the frozen backbone and oldfc keep from their training"))
            return out
        boosted = numel("convnets.1.", "fc.", "fe_fc.")
        student = sum(p.numel() for p in net.convnets[0].parameters()) + 2 * net.fe_fc.weight.numel() \
            + 2 * net.fe_fc.bias.numel()
        stats = sum(b.numel() * b.element_size() for b in net.convnets[0].buffers())
        return out + [
            Stored("foster.boosting_grads", (stale + boosted,), torch.float32, "method_state",
                   "the boosting network's gradients, still allocated"),
            Stored("foster.boosting_momentum", (boosted,), torch.float32, "method_state",
                   "the boosting optimizer's momentum, held by _train's frame"),
            Stored("foster.student_weights", (student,), torch.float32, "method_state",
                   "the student's own weights (its steps run on stand-ins of its shapes)"),
            Stored("foster.student_bn_stats", (stats,), torch.uint8, "method_state",
                   "the student's batch-norm statistics")]

    def schedule(self, s: Scenario) -> list[Phase]:
        """The first task, then per later task boosting and compression on the task's images
        and the fixed-per-class memory; herding (old classes' means over the memory, the new
        classes' images and exemplars) after boosting's compression."""
        n, cpt = s.images_per_task(), classes_per_task(s)
        per_class = s.buffer_size // max((s.tasks - 1) * cpt, 1)
        out = [Phase("first task", 1, n, int(self.option(s, "init_epochs")), "first",
                     extra_forward_samples=n + per_class * cpt)]
        for t in range(1, s.tasks):
            m = per_class * t * cpt
            out.append(Phase(f"task {t} boosting (new images + memory)", 1, n + m, s.epochs,
                             "main", first_task=t, mixed=True,
                             extra_forward_samples=n + m + per_class * cpt))
            out.append(Phase(f"task {t} compression (new images + memory)", 1, n + m,
                             int(self.option(s, "compression_epochs")), "compress",
                             first_task=t, mixed=True))
        return out

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not known_classes(ctx):
            return self.first_step(ctx, x, y)
        if ctx.variant == "compress":
            return self.compression_step(ctx, x, y)
        t = float(ctx.options.get("temperature", 2.0))
        known = known_classes(ctx)
        weights = ctx.state.get("per_cls_weights")
        outputs = ctx.model(x)
        logits, fe_logits = outputs["logits"], outputs["fe_logits"]
        old_logits = outputs["old_logits"].detach()
        loss_clf = F.cross_entropy(logits / weights, y)
        loss_fe = F.cross_entropy(fe_logits, y)
        loss_kd = 1 * pycil_kd_loss(logits[:, :known], old_logits, t)
        loss = loss_clf + loss_fe + loss_kd
        ctx.zero_grad()
        ctx.backward(loss)
        self.loop_end(ctx, logits, y, old_logits=old_logits, loss=loss, loss_clf=loss_clf,
                      loss_fe=loss_fe, loss_kd=loss_kd,
                      **{f"outputs.{k}": v for k, v in outputs.items()})
        return loss.detach()

    def compression_step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """foster.py:316-336: the student's logits (its dict dropped), the boosting network
        under no_grad (its dict kept into the next step), BKD (foster.py:402-407)."""
        net = ctx.model
        t = float(ctx.options.get("temperature", 2.0))
        net.convnets[0].train()  # the student's convnet (stand-in), in training mode
        student = torch.cat([net.convnets[0](x)["features"]], 1)
        dark_logits = net.fe_fc(student)
        net.fe_fc(student[:, -net.out_dim:])  # the student's fe_logits, computed and dropped
        del student
        net.eval()
        frozen = {n: p.detach() for n, p in net.named_parameters()}
        with torch.no_grad():
            outputs = torch.func.functional_call(net, frozen, (x,), strict=False)
            logits = outputs["logits"]
        weights = ctx.state.get("per_cls_weights")
        pred = torch.log_softmax(dark_logits / t, dim=1)
        soft = torch.softmax(logits / t, dim=1)
        soft = soft * weights
        soft = soft / soft.sum(1)[:, None]
        loss = -1 * torch.mul(soft, pred).sum() / pred.shape[0]
        ctx.zero_grad()
        ctx.backward(loss)
        self.loop_end(ctx, dark_logits[: y.shape[0]], y, loss=loss, dark_logits=dark_logits,
                      **{f"outputs.{k}": v for k, v in outputs.items()})
        return loss.detach()


FOSTER.defaults = {**FOSTER.defaults, "buffer_size": 1800}
