"""What PyCIL's class-incremental learners share (iCaRL, WA, Replay, DER, MEMO).

Defaults are PyCIL's benchmark settings (FACTS.md section 3): ResNet-32 on
CIFAR-100 in 10 tasks, batch 128, SGD with momentum, a 2,000-exemplar memory
of uint8 images, 200 epochs on the first task.  Exemplars are mixed into the
training data rather than drawn as a replay batch, so a later task's epoch
covers its new images plus the memory.  After each task, exemplars are chosen
by herding, which runs the network over the task's images and the memory.

:class:`PyCILCode` is what every PyCIL implementation (``impl = "pycil"``) shares:
PyCIL's loop (:mod:`costmodel.codebases.pycil`), its IncrementalNet, its host memory.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.codebases.pycil import PYCIL
from costmodel.methods.base import (Method, Option, PaperTerms, Phase, StepContext, Stored, Work,
                                    classes_per_task, exemplars)
from costmodel.models.pycil import IncrementalNet
from costmodel.models.staged import split
from costmodel.scenario import Scenario

PYCIL_DEFAULTS: dict[str, Any] = {"model": "resnet32-cifar", "dataset": "cifar100",
                                  "batch_size": 128, "optimizer": "sgd-momentum",
                                  "buffer_size": 2000}


class PyCILMethod(Method):
    """Base of PyCIL's learners: the schedule, the exemplar memory, the paper terms."""

    later_epochs: ClassVar[int] = 170
    memory = "per-class"
    paper_code: ClassVar[str] = "PyCIL"
    options = {"init_epochs": Option(200, "epochs of the first task (PyCIL's init_epoch)")}

    @classmethod
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.defaults = {**PYCIL_DEFAULTS, "epochs": cls.later_epochs}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        if variant == "first":
            return []
        return exemplars(s, s.buffer_size, False, "exemplar memory, uint8 images (PyCIL)")

    def schedule(self, s: Scenario) -> list[Phase]:
        n, m = s.images_per_task(), s.buffer_size
        first = Phase("first task", 1, n, int(s.options.get("init_epochs", 200)), "first",
                      extra_forward_samples=n)
        later = Phase("later tasks (new images + memory)", s.tasks - 1, n + m, s.epochs, "main",
                      first_task=1, extra_forward_samples=n + m, mixed=True)
        return [first, later]

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size, extra_params=float(self.teachers(s)),
                          note=f"{self.name} is not in the LightCL table: same rules (weights, "
                               "gradients, activations, stored parameter-sized tensors)")


def aux_targets(y: torch.Tensor, known: int) -> torch.Tensor:
    """DER's auxiliary labels: new classes 1..k, every old class 0."""
    shifted = y - known + 1
    return torch.where(shifted > 0, shifted, torch.zeros_like(shifted))


class PyCILCode:
    """What every PyCIL implementation shares (mixed in before the method's class):
    the loop of :mod:`costmodel.codebases.pycil` and PyCIL's IncrementalNet.

    A learner's own step calls :meth:`loop_end` with what its loop keeps referenced.
    """

    impl: ClassVar[str] = "pycil"
    codebase = PYCIL
    zeroes_grad_in_step = True
    grows = 1
    """The classifier is as wide as the classes seen: a step's FLOPs are affine in the task."""
    trains = False  # costed and checked against PyCIL's own loop; costcl train runs --impl costcl

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        """The classifier is as wide as the classes seen (inc_net.py:130-140)."""
        return IncrementalNet(lambda: split(build(), self.name), classes_per_task(s) * tasks_seen)

    def teacher_network(self, s: Scenario, build: Callable[[], nn.Module],
                        tasks_seen: int) -> nn.Module:
        """The copy made in the previous task's after_task: that task's width."""
        return self.network(s, build, tasks_seen - 1)

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        """Host numpy (base.py:180-230): the exemplars as uint8 images and int64 labels,
        and the NME class means as float64 (base.py:185), one row per known class.

        PyCIL keeps ``memory_size // classes seen`` exemplars per class (base.py:39-45):
        its 2,000 are 1,980 at the last of 10 tasks, which is ``--buffer-size 1980``."""
        tasks = known_before(s, variant)
        if not tasks:
            return []
        known = tasks * classes_per_task(s)
        out = [dataclasses.replace(st, where="host") for st in exemplars(
            s, s.buffer_size, False, "exemplar memory, uint8 images, host numpy (PyCIL)")]
        out.append(Stored("class_means", (known, net.feature_dim(tasks)), torch.float64,
                          "method_state", "NME class means, host numpy float64", where="host"))
        return out

    def works(self, s: Scenario) -> list[Work]:
        """``_compute_accuracy`` every 5 epochs (no_grad), and ``eval_task``'s NME
        ``_extract_vectors`` at the test batch without no_grad (base.py:161-178)."""
        return [*super().works(s),  # type: ignore[misc]
                Work("_extract_vectors (NME, herding)", s.batch_size, extract_vectors)]

    def first_step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every learner's ``_init_train`` (icarl.py:110-122, der.py:133-145, ...): the
        logits of the output dict, cross-entropy, zero_grad, backward."""
        logits = ctx.model(x)["logits"]
        loss = F.cross_entropy(logits, y)
        ctx.zero_grad()
        ctx.backward(loss)
        self.loop_end(ctx, logits, y, loss=loss)
        return loss.detach()

    @staticmethod
    def loop_end(ctx: StepContext, logits: torch.Tensor, y: torch.Tensor,
                 **kept: torch.Tensor) -> None:
        """What the loop does after ``optimizer.step()`` and keeps into the next step
        (icarl.py:172-176): the predictions, the accuracy count and ``kept``."""
        values, preds = torch.max(logits, dim=1)
        correct = preds.eq(y.expand_as(preds)).sum()
        ctx.keep.update(kept, logits=logits, max=values, preds=preds, correct=correct)


def known_before(s: Scenario, variant: str) -> int:
    """Tasks learned before a variant's step: 0 in the first, ``k - 1`` in 'tk', else all but one."""
    if variant == "first":
        return 0
    if variant.startswith("t") and variant[1:].isdigit():
        return int(variant[1:]) - 1
    return s.tasks - 1


def extract_vectors(ctx: StepContext, x: torch.Tensor) -> None:
    """One batch of ``_extract_vectors``: eval mode, grad enabled; the features are copied
    to numpy at once, so their graph goes with them.  Run as the whole forward (the heads
    add a few kilobytes) so that the engine sees the graph it keeps."""
    ctx.model.eval()
    vectors = ctx.model(x)["features"]
    del vectors
