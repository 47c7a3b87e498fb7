"""Online EWC (Schwarz et al., 2018): a quadratic pull towards the last task's weights.

Stores the Fisher information and the anchor weights (one parameter-sized
tensor each).  The penalty is built per parameter with autograd, as PyCIL's
EWC does.  After every task the Fisher is estimated from every training image
on its own (forward and backward at batch 1), as Mammoth's ``ewc_on`` does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.codebases.mammoth import MAMMOTH, loop_inputs
from costmodel.methods.base import (Method, Option, PaperTerms, Phase, StepContext, Stored, TaskRun,
                                    first_then_later)
from costmodel.scenario import Scenario


def _trained(net: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return list(net.named_parameters())


class EWC(Method):
    name = "ewc"
    summary = "online EWC: Fisher-weighted pull towards the previous weights"
    paper = "Schwarz et al., ICML 2018; Mammoth ewc_on"
    reference_impl = "mammoth"
    options = {"lambda": Option(10.0, "penalty weight (e_lambda)"),
               "gamma": Option(1.0, "decay of the running Fisher")}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        if variant == "first":
            return []
        n = sum(p.numel() for _, p in _trained(net))
        return [Stored("ewc.fisher", (n,), s.torch_dtype, "method_state", "Fisher information"),
                Stored("ewc.anchor", (n,), s.torch_dtype, "method_state", "weights after the last task")]

    def schedule(self, s: Scenario) -> list[Phase]:
        fisher = {"extra_train_samples": s.images_per_task()}  # every image, one at a time
        return first_then_later(s, fisher, fisher)

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = ctx.model(x)
        loss = F.cross_entropy(out, y)
        if "ewc.fisher" in ctx.state:
            fisher, anchor = ctx.state["ewc.fisher"], ctx.state["ewc.anchor"]
            penalty, offset = 0.0, 0
            for _, p in _trained(ctx.model):
                n = p.numel()
                f, a = fisher[offset:offset + n].view_as(p), anchor[offset:offset + n].view_as(p)
                penalty = penalty + (f * (p - a) ** 2).sum()
                offset += n
            loss = loss + ctx.options.get("lambda", 10.0) * penalty
        ctx.backward(loss)
        return loss.detach()

    def end_task(self, run: TaskRun) -> None:
        """Mammoth's online Fisher: every training image alone, E[p(y|x)] * grad^2."""
        params = [p for _, p in _trained(run.net)]
        fish = torch.zeros(sum(p.numel() for p in params), device=run.device)
        seen = 0
        for x, y in run.batches():
            for i in range(len(x)):
                run.net.zero_grad(set_to_none=True)
                loss = -F.nll_loss(F.log_softmax(run.net(x[i:i + 1]), dim=1), y[i:i + 1],
                                   reduction="none")
                weight = torch.exp(loss.detach()).mean()
                loss.mean().backward()
                grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                   for p in params])
                fish += weight * grads ** 2
                seen += 1
        run.net.zero_grad(set_to_none=True)
        fish /= max(seen, 1)
        old = run.state.get("ewc.fisher")
        run.state["ewc.fisher"] = fish if old is None else run.scenario.options["gamma"] * old + fish
        run.state["ewc.anchor"] = torch.cat([p.detach().flatten() for p in params]).clone()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size, extra_params=1.0,
                          note="the table counts one parameter-sized tensor for EWC; online EWC "
                               "keeps two (Fisher and anchor weights) and estimates the Fisher "
                               "over every image after each task, which the table does not count")


class EWCMammoth(EWC):
    """Mammoth's ``ewc_on`` (models/ewc_on.py:67-81): no penalty in the graph.  After
    the forward, the penalty's gradient 2·λ·F·(θ − θ*) is computed in closed form on
    flat parameter-sized vectors (ewc_on.py:67-68: λ·2·F, then ``get_params()`` - a
    ``parameters_to_vector`` cat - minus the checkpoint, then the product: three
    P-sized tensors at once at the subtraction) and installed as every parameter's
    ``.grad``, views into the one product vector (backbone/__init__.py:138-150); the
    backward of the plain cross-entropy then adds into those gradients in place.

    Fisher and checkpoint are one flat float32 vector each (ewc_on.py:41-65), on the
    device; the Fisher is estimated after each task from every image alone, as
    costcl's step assumes.  The loop's un-augmented batch is an input of every step
    (utils/training.py:100-106).
    """

    impl = "mammoth"
    codebase = MAMMOTH
    cites = ("models/ewc_on.py:41-81", "backbone/__init__.py:108-115",
             "backbone/__init__.py:138-150", "utils/training.py:100-106")

    def batch_inputs(self, s: Scenario, variant: str = "main") -> dict:
        return loop_inputs(s)

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        outputs = ctx.model(x)
        if "ewc.fisher" in ctx.state:  # self.checkpoint is not None
            set_grads(ctx.model, self.penalty_grads(ctx))
        loss = F.cross_entropy(outputs, y)
        ctx.backward(loss)
        return loss.detach()

    @staticmethod
    def penalty_grads(ctx: StepContext) -> torch.Tensor:
        """get_penalty_grads (ewc_on.py:67-68), evaluated left to right as Python does."""
        fish, checkpoint = ctx.state["ewc.fisher"], ctx.state["ewc.anchor"]
        return ctx.options.get("lambda", 10.0) * 2 * fish * (get_params(ctx.model).data - checkpoint)


def get_params(net: nn.Module) -> torch.Tensor:
    """MammothBackbone.get_params (backbone/__init__.py:108-115): a new flat copy."""
    return torch.nn.utils.parameters_to_vector(net.parameters())


def set_grads(net: nn.Module, new_grads: torch.Tensor) -> None:
    """MammothBackbone.set_grads (backbone/__init__.py:138-150): each parameter's
    ``.grad`` becomes a view into the flat vector."""
    progress = 0
    for p in net.parameters():
        p.grad = new_grads[progress:progress + p.numel()].view(p.size())
        progress += p.numel()
