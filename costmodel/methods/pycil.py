"""What PyCIL's class-incremental learners share (iCaRL, WA, Replay, DER, MEMO).

Defaults are PyCIL's benchmark settings (FACTS.md section 3): ResNet-32 on
CIFAR-100 in 10 tasks, batch 128, SGD with momentum, a 2,000-exemplar memory
of uint8 images, 200 epochs on the first task.  Exemplars are mixed into the
training data rather than drawn as a replay batch, so a later task's epoch
covers its new images plus the memory.  After each task, exemplars are chosen
by herding, which runs the network over the task's images and the memory.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from costmodel.methods.base import Method, Option, PaperTerms, Phase, Stored, exemplars
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
