"""MEMO (Zhou et al., ICLR 2023): share the generalized blocks, expand only the last stage.

As PyCIL's ``memo`` with its benchmark settings: the generalized blocks keep
training (``train_base``), the old specialized blocks are frozen in eval mode,
each task adds a copy of the last stage; classifier and auxiliary head as DER's.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from costmodel.methods.base import Option, PaperTerms, StepContext, classes_per_task
from costmodel.methods.der_expand import expand_step, pycil_expand_step
from costmodel.methods.pycil import PyCILCode, PyCILMethod
from costmodel.models.expand import MemoNet
from costmodel.models.pycil import AdaptiveNet
from costmodel.models.staged import split
from costmodel.scenario import Scenario


class MEMO(PyCILMethod):
    name = "memo"
    summary = "MEMO: shared generalized blocks, one specialized block (last stage) per task"
    paper = "Zhou et al., ICLR 2023; PyCIL memo"
    grows = 1
    trains = False
    reference_impl = "pycil"
    options = {**PyCILMethod.options,
               "train_base": Option(True, "keep training the generalized blocks (PyCIL's benchmark)")}

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        return MemoNet(lambda: split(build(), self.name), tasks_seen, s.classes, classes_per_task(s))

    def trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str]:
        keep = [f"specialized.{len(net.specialized) - 1}.", "fc.", "aux_fc."]
        if s.options.get("train_base", True) or variant == "first":
            keep.append("generalized.")
        return frozenset(n for n, _ in net.named_parameters() if n.startswith(tuple(keep)))

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return expand_step(ctx, x, y)

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size, weights=None,
                          note="memo is not in the LightCL table; its paper convention counts "
                               "the network as built for the last task")


class MEMOPyCIL(PyCILCode, MEMO):
    """MEMO as PyCIL's models/memo.py trains it on its AdaptiveNet (utils/inc_net.py:750-820,
    convs/memo_cifar_resnet.py).

    * the generalized blocks train in train mode (``train_base``, memo.py:92-108); the old
      specialized blocks are frozen in eval mode (memo.py:50-56), but their input, the base
      feature map, requires grad: every block saves its activations and back-propagates
      the gradient of its input, so backward costs more than the forward;
    * ``fc`` grows with the tasks in both dimensions (FLOPs quadratic in the tasks);
    * the output dict, the base feature map included, stays referenced into the next
      step until the next forward returns; the loss weighs the auxiliary term by
      ``alpha_aux`` (memo.py:225).
    """

    grows = 2
    cites = ("models/memo.py:43-56", "models/memo.py:92-110", "models/memo.py:208-236",
             "utils/inc_net.py:750-820", "convs/memo_cifar_resnet.py:22-136")

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        return AdaptiveNet(lambda: split(build(), self.name), tasks_seen, classes_per_task(s))

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not ctx.task:
            return self.first_step(ctx, x, y)
        return pycil_expand_step(ctx, x, y, alpha_aux=1.0)
