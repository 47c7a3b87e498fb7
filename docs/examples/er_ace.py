"""ER-ACE: experience replay with an asymmetric cross-entropy (Caccia et al., ICLR 2022).

The worked example of docs/methods.md: a complete continual-learning method for
costcl, outside its catalog.  Name it by its class path from the folder that
holds this file (or install it and register it, see docs/methods.md)::

    costcl estimate --method er_ace:ERACE
    costcl validate --method er_ace:ERACE --batch-size 8
    costcl train --method er_ace:ERACE --data-root synthetic:20 --epochs 1

The method: a reservoir buffer of past images; every step after the first task
runs the incoming batch through the model with the logits of the past tasks'
classes masked out of its cross-entropy (so the new classes do not push the old
ones down), runs a replay batch through the model a second time with a plain
cross-entropy over every class, adds the two losses and back-propagates once.
Two forwards, so both graphs are alive in the one backward: that is what it
costs beside ER, which concatenates the two batches.

Everything the engine needs is here and nothing else: the same ``step`` is
traced on meta tensors by ``costcl estimate`` and runs on real ones in
``costcl validate`` and ``costcl train``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import (Method, Option, PaperTerms, Phase, StepContext, Stored,
                                    exemplars, first_then_later, known_classes)
from costmodel.scenario import Scenario


class ERACE(Method):
    name = "er-ace"
    summary = "replay with an asymmetric cross-entropy: the batch's loss masks the past classes"
    paper = "Caccia et al., ICLR 2022"
    replays = True                      # a step draws ctx.replay_batch samples from the buffer
    defaults = {"buffer_size": 500,     # scenario fields the paper fixes, unless the user sets them
                "replay_batch": lambda s: s.batch_size or 32}
    memory = "reservoir"                # costcl train keeps a reservoir of every batch ...
    reservoir = ("x", "y")              # ... of its images and labels
    options = {"mask_past": Option(True, "mask the past tasks' classes in the batch's loss "
                                         "(false: ER with two forwards)")}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        """The buffer, as the trainer keeps it: float images and int64 labels."""
        return exemplars(s, s.buffer_size, True, "reservoir buffer of float images")

    def schedule(self, s: Scenario) -> list[Phase]:
        """The first task replays nothing; every later one does."""
        return first_then_later(s)

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = ctx.model(x)
        if ctx.options["mask_past"] and ctx.task > 0:
            # Which classes are past comes from the task index, not from y.unique():
            # a step must not read tensor values (they do not exist on meta tensors).
            past = torch.arange(logits.shape[1], device=logits.device) < known_classes(ctx)
            logits = logits.masked_fill(past, -1e9)
        loss = F.cross_entropy(logits, y)
        if ctx.replay_batch:            # 0 in the first task's steps
            buf = ctx.replay(ctx.replay_batch)
            loss = loss + F.cross_entropy(ctx.model(buf["x"]), buf["y"])
        ctx.backward(loss)
        return loss.detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + s.replay_batch,
                          note="er-ace: two forwards, the batch's and the replay batch's")
