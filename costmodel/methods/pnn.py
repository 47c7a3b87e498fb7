"""Progressive Neural Networks (Rusu et al., 2016): one column per task.

Every task adds a full column with lateral adapters (1x1 convolutions) from
the previous stage of every older column; older columns are frozen and still
run on every batch.  Each column has its own head, so at test time the task
must be known: PNN cannot run under class-incremental evaluation.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.methods.base import Method, PaperTerms, StepContext, classes_per_task, known_classes
from costmodel.models.expand import ProgressiveNet
from costmodel.models.staged import split
from costmodel.scenario import Scenario


class PNN(Method):
    name = "pnn"
    summary = "Progressive Networks: a new column per task, lateral links from the old ones"
    paper = "Rusu et al., 2016; Mammoth pnn"
    settings = ("task-il",)
    settings_why = "PNN chooses a column by task identity at test time"
    grows = 2
    trains = False

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        return ProgressiveNet(lambda: split(build(), "pnn"), tasks_seen, classes_per_task(s))

    def trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str]:
        new = f"columns.{len(net.columns) - 1}."
        return frozenset(n for n, _ in net.named_parameters() if n.startswith(new))

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(ctx.model(x), y - known_classes(ctx))
        ctx.backward(loss)
        return loss.detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        T = s.tasks
        return PaperTerms(samples=s.batch_size, weights=1.0, gradients=1.0, extra_params=4.0,
                          flops_factor=(T + 1) * (T + 2) / (6 * T),
                          note="pnn: the table's 6P and SGD x (T+1)(T+2)/(6T) are reproduced as "
                               "the table states them, not derived; costcl's runtime column "
                               "builds the columns")
