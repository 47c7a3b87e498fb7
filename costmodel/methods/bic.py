"""BiC, Bias Correction (Wu et al., CVPR 2019), as PyCIL's models/bic.py trains it.

Cited at G-U-N/PyCIL@87cc4110 (:mod:`costmodel.codebases.pycil`); the method is its
PyCIL implementation (there is no costcl step beside it).

* the network (bic.py:26-28, utils/inc_net.py:237-308) is PyCIL's convnet, a linear
  classifier as wide as the classes seen and one bias layer per task (``alpha``,
  ``beta``); every forward runs all of them, each cloning the logits and rewriting its
  task's slice (inc_net.py:243-248, 263-276);
* stage 1 (bic.py:95-125, 141-175) on the task's images and the memory, less the
  validation split: cross-entropy and distillation at T = 2 from the previous task's
  frozen network (run without ``no_grad``; with frozen weights it builds no graph),
  weighed by ``known / total``; the bias layers are in an optimizer group with learning
  rate 0 but require grad, so they get gradients and momentum;
* stage 2, bias correction (bic.py:117-118, 177-200), on the validation split:
  ``val_samples_per_class = int(0.1 * memory_size / known)`` images of every class seen,
  new and old, taken out of the training data and the memory
  (utils/data_manager.py:130-184); the loss is the cross-entropy of the *softmax* of the
  logits; only the last bias layer is in the optimizer, but every parameter still
  requires grad: backward runs through the whole network and, since ``zero_grad`` clears
  only the optimizer's two parameters, every other gradient stays allocated and is added
  into (traced as gradients alive through the step);
* after every epoch of both stages ``_compute_accuracy`` runs the stage's whole training
  set and the test set under ``no_grad`` (bic.py:127-129): the training-set pass is in the
  schedule's forward-only samples (the test set is not, as for every PyCIL learner).

Epochs: 170 for each stage of every task (bic.py:12; no separate first-task count);
batch 128, SGD with momentum.  The teacher is the previous task's network with its
bias layers; herding and NME class means as every PyCIL learner.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import Option, Phase, StepContext, classes_per_task, known_classes
from costmodel.methods.pycil import PyCILCode, PyCILMethod
from costmodel.models.pycil import ConvNet
from costmodel.models.staged import Stages, split
from costmodel.scenario import Scenario

SPLIT_RATIO = 0.1
"""Share of the memory held out for bias correction (bic.py:17)."""


class BiasLayer(nn.Module):
    """BiasLayer_BIC (inc_net.py:237-251): ``alpha * x + beta`` on one task's logits."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, low: int, high: int) -> torch.Tensor:
        ret_x = x.clone()
        ret_x[:, low:high] = self.alpha * x[:, low:high] + self.beta
        return ret_x


class IncrementalNetWithBias(nn.Module):
    """inc_net.py:254-308 with ``bias_correction=True``: convnet, fc, one bias layer per task."""

    def __init__(self, parts: Stages, cpt: int, tasks: int) -> None:
        super().__init__()
        self.convnet = ConvNet(parts)
        self.fc = nn.Linear(self.convnet.out_dim, cpt * tasks)
        self.bias_layers = nn.ModuleList(BiasLayer() for _ in range(tasks))
        self.cpt = cpt

    def feature_dim(self, tasks: int) -> int:
        return self.convnet.out_dim

    def forward(self, x: torch.Tensor) -> dict:
        out = self.convnet(x)
        logits = self.fc(out["features"])
        for i, layer in enumerate(self.bias_layers):
            logits = layer(logits, i * self.cpt, (i + 1) * self.cpt)
        return {"logits": logits, **out}


class BiC(PyCILCode, PyCILMethod):
    name = "bic"
    summary = "BiC: distillation, then a bias-correction layer fitted on a held-out split"
    paper = "Wu et al., CVPR 2019; PyCIL bic"
    reference_impl = "pycil"
    later_epochs = 170
    grows = 0
    """Two different later steps (training, bias correction): each is traced at the last task
    and the run's FLOPs take every later task at its classifier width (the engine's growth
    polynomial is the main step's alone).  That overstates them by the classifier's few
    FLOPs per sample (64 x 10 MACs per missing task), under 1e-4 of the run."""
    cites = ("models/bic.py:12-20", "models/bic.py:26-34", "models/bic.py:36-93",
             "models/bic.py:95-139", "models/bic.py:141-200", "utils/inc_net.py:237-308",
             "utils/data_manager.py:130-184", "convs/cifar_resnet.py:57-152")
    options = {"init_epochs": Option(170, "epochs of the first task (bic.py:12: every task's)"),
               "temperature": Option(2.0, "distillation temperature (bic.py:18)")}

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        return IncrementalNetWithBias(split(build(), self.name), classes_per_task(s), tasks_seen)

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        return 1 if variant == "main" else 0

    def schedule(self, s: Scenario) -> list[Phase]:
        """Task 0's single stage, then each later task's two stages with its own split:
        ``v = int(0.1 * memory / known)`` per class, ``memory // known`` exemplars per old
        class, as PyCIL sizes them for ``memory_size = --buffer-size``.  Every epoch also
        runs the stage's data forward for the training accuracy; herding after each task."""
        n, m, cpt = s.images_per_task(), s.buffer_size, classes_per_task(s)
        e0 = int(self.option(s, "init_epochs"))
        out = [Phase("first task", 1, n, e0, "first", extra_forward_samples=e0 * n + n)]
        for t in range(1, s.tasks):
            known = t * cpt
            v = int(SPLIT_RATIO * m / known)
            train = (n // cpt - v) * cpt + (m // known - v) * known
            val = v * (known + cpt)
            out.append(Phase(f"task {t} stage 1 (new images + memory, less the split)", 1,
                             train, s.epochs, "main", first_task=t, mixed=True,
                             extra_forward_samples=s.epochs * train + n + m))
            out.append(Phase(f"task {t} stage 2 bias correction (validation split)", 1, val,
                             s.epochs, "bias", first_task=t,
                             extra_forward_samples=s.epochs * val))
        return out

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if ctx.variant == "bias":
            return self.bias_step(ctx, x, y)
        logits = ctx.model(x)["logits"]
        clf_loss = F.cross_entropy(logits, y)
        known = known_classes(ctx)
        kept = {}
        if not known:
            loss = clf_loss
        else:
            t = float(ctx.options.get("temperature", 2.0))
            lamda = known / (known + ctx.classes // ctx.tasks)
            old_logits = ctx.state["teacher"](x)["logits"].detach()
            hat_pai_k = F.softmax(old_logits / t, dim=1)
            log_pai_k = F.log_softmax(logits[:, :known] / t, dim=1)
            distill_loss = -torch.mean(torch.sum(hat_pai_k * log_pai_k, dim=1))
            loss = distill_loss * lamda + clf_loss * (1 - lamda)
            kept = {"old_logits": old_logits, "hat_pai_k": hat_pai_k, "log_pai_k": log_pai_k,
                    "distill_loss": distill_loss}
        ctx.zero_grad()
        ctx.backward(loss)
        ctx.keep.update(kept, logits=logits, clf_loss=clf_loss, loss=loss)
        return loss.detach()

    @staticmethod
    def bias_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Stage 2 (bic.py:117-124): the cross-entropy of the softmax.  Its ``zero_grad``
        frees only the last bias layer's two gradients: every other gradient, left by
        stage 1 and the earlier steps, stays allocated and backward adds into it.  Where
        none exists yet (the first step costcl runs or traces) it is allocated as zeros,
        so that the step holds them from its start, as PyCIL's does."""
        net = ctx.model
        last = {id(p) for p in net.bias_layers[-1].parameters()}
        for p in net.parameters():
            if id(p) in last:
                p.grad = None
            elif p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        logits = net(x)["logits"]
        loss = F.cross_entropy(torch.softmax(logits, dim=1), y)
        ctx.backward(loss)
        ctx.keep.update(logits=logits, loss=loss)
        return loss.detach()
