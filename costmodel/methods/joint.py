"""JOINT: train on all the data seen so far; the upper bound of CL tables."""
from __future__ import annotations

import torch

from costmodel.methods.base import Method, Option, PaperTerms, Phase, StepContext
from costmodel.methods.sgd import cross_entropy_step
from costmodel.scenario import Scenario


class Joint(Method):
    name = "joint"
    summary = "joint training on all data seen so far (the upper bound)"
    paper = "LightCL table's JOINT; Mammoth's joint"
    trains = False  # costed; retraining on all data is not a CL run to train here
    options = {"retrain": Option("cumulative", "'cumulative': after each task retrain on all data "
                                 "seen so far; 'final': once, on everything, after the last task",
                                 choices=("cumulative", "final"))}

    def schedule(self, s: Scenario) -> list[Phase]:
        n = s.images_per_task()
        if self.option(s, "retrain") == "final":
            return [Phase("all data, once", 1, n * s.tasks, s.epochs)]
        return [Phase(f"after task {t + 1}: tasks 1-{t + 1}", 1, n * (t + 1), s.epochs,
                      first_task=t) for t in range(s.tasks)]

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cross_entropy_step(ctx, x, y)

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size, flops_factor=s.tasks,
                          note="the table counts JOINT as tasks x SGD: every task retrains on "
                               "the whole training set")
