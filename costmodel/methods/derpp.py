"""DER++ (Buzzega et al., NeurIPS 2020): stored logits and labels, two replay batches.

Three forwards (the batch, a replay batch for the logit loss, another for the
label loss).  costcl's clean step runs a backward after each, so only one of
them holds activations at a time; Mammoth's ``derpp`` (the default
implementation, :class:`DERppMammoth`) and the original DER++ code run one
backward of the summed loss, so all three do.  (The LightCL table counts all
three at once: 2P + (B + 2R)a.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.codebases.mammoth import MAMMOTH, get_data, loop_inputs, on_host
from costmodel.methods.base import Method, Option, PaperTerms, StepContext, Stored, exemplars
from costmodel.methods.der import logits_store
from costmodel.methods.er import REPLAY_DEFAULTS
from costmodel.scenario import Scenario


DERPP_OPTIONS = {"alpha": Option(0.1, "weight of the logit-matching loss"),
                 "beta": Option(0.5, "weight of the replayed cross-entropy")}


class DERpp(Method):
    name = "derpp"
    summary = "DER++: stored logits and labels, two replay batches per step"
    paper = "Buzzega et al., NeurIPS 2020; Mammoth derpp"
    reference_impl = "mammoth"
    replays = True
    defaults = REPLAY_DEFAULTS
    memory = "reservoir"
    reservoir = ("x", "y", "logits")
    options = {**DERPP_OPTIONS,
               "separate_backward": Option(True, "backward after each forward (costcl's clean "
                                           "step); false: one backward for the summed loss "
                                           "(Mammoth's derpp, SparCL, the original DER++ code)")}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        return exemplars(s, s.buffer_size, True, "reservoir buffer") + [logits_store(s)]

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return derpp_step(ctx, x, y, ctx.options.get("separate_backward", True))

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + 2 * s.replay_batch,
                          note="the table counts the batch and both replay batches at once")


def derpp_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, separate: bool) -> torch.Tensor:
    alpha, beta = ctx.options.get("alpha", 0.1), ctx.options.get("beta", 0.5)
    out = ctx.model(x)
    ctx.keep["logits"] = out.detach()
    total = F.cross_entropy(out, y)
    if not ctx.replay_batch:  # an empty buffer: the batch alone
        ctx.backward(total)
        return total.detach()
    if separate:
        ctx.backward(total)
    buf = ctx.replay(ctx.replay_batch)
    loss = alpha * F.mse_loss(ctx.model(buf["x"]), buf["logits"])
    if separate:
        ctx.backward(loss)
        total = total.detach() + loss.detach()
    else:
        total = total + loss
    buf = ctx.replay(ctx.replay_batch)
    loss = beta * F.cross_entropy(ctx.model(buf["x"]), buf["y"])
    if separate:
        ctx.backward(loss)
        return (total + loss.detach()).detach()
    total = total + loss
    ctx.backward(total)
    return total.detach()


class DERppMammoth(DERpp):
    """Mammoth's ``derpp`` (models/derpp.py:32-60): three forwards (the batch; a replay
    batch for the logit loss; a second, independent ``get_data`` for the label loss),
    their losses added in place into the batch's cross-entropy, and ONE backward
    (derpp.py:53), so all three graphs are alive at once; the batch's outputs are
    stored after the step (derpp.py:56-58).

    Where Mammoth's code changes memory: the buffer (float32 images, int64 labels,
    float32 logits) is on the host (utils/buffer.py:314, 407-411); each ``get_data``
    gathers all three fields and augments the images there, then copies to the device
    (utils/buffer.py:529-547), and what it returns stays referenced until the next
    one replaces it (``_`` included); the loop's un-augmented batch is an input of
    every step (utils/training.py:100-106).
    """

    impl = "mammoth"
    codebase = MAMMOTH
    cites = ("models/derpp.py:32-60", "utils/buffer.py:314", "utils/buffer.py:407-411",
             "utils/buffer.py:529-547", "utils/training.py:100-106")
    options = DERPP_OPTIONS  # one backward: separate_backward is not Mammoth's

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        return on_host(super().stored(s, net, variant))

    def batch_inputs(self, s: Scenario, variant: str = "main") -> dict:
        return loop_inputs(s)

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        alpha, beta = ctx.options["alpha"], ctx.options["beta"]
        outputs = ctx.model(x)
        loss = F.cross_entropy(outputs, y)
        if ctx.replay_batch:
            buf = get_data(ctx, ctx.replay_batch)
            buf_inputs, _, buf_logits = buf["x"], buf["y"], buf["logits"]
            buf_outputs = ctx.model(buf_inputs)
            loss_mse = alpha * F.mse_loss(buf_outputs, buf_logits)
            loss += loss_mse
            buf = get_data(ctx, ctx.replay_batch)
            buf_inputs, buf_labels, _ = buf["x"], buf["y"], buf["logits"]
            buf_outputs = ctx.model(buf_inputs)
            loss_ce = beta * F.cross_entropy(buf_outputs, buf_labels)
            loss += loss_ce
        ctx.backward(loss)
        ctx.keep["logits"] = outputs.detach()
        return loss.detach()
