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
from costmodel.methods.der_expand import expand_step
from costmodel.methods.pycil import PyCILMethod
from costmodel.models.expand import MemoNet
from costmodel.models.staged import split
from costmodel.scenario import Scenario


class MEMO(PyCILMethod):
    name = "memo"
    summary = "MEMO: shared generalized blocks, one specialized block (last stage) per task"
    paper = "Zhou et al., ICLR 2023; PyCIL memo"
    grows = 1
    trains = False
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
