"""Dark Experience Replay (Buzzega et al., NeurIPS 2020): replay stored logits.

As Mammoth's ``der``: the buffer keeps each exemplar's logits from when it was
stored; a replay batch runs through the model on its own and its outputs are
pulled towards the stored logits (MSE).  One backward for the summed loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.codebases.mammoth import MAMMOTH, get_data, loop_inputs, on_host
from costmodel.methods.base import Method, Option, PaperTerms, StepContext, Stored, exemplars
from costmodel.methods.er import REPLAY_DEFAULTS
from costmodel.scenario import Scenario


def logits_store(s: Scenario) -> Stored:
    return Stored("buffer.logits", (s.buffer_size, s.classes), s.torch_dtype, "buffer",
                  "logits of each exemplar when it was stored")


class DER(Method):
    name = "der"
    summary = "Dark Experience Replay: match the logits stored with each exemplar"
    paper = "Buzzega et al., NeurIPS 2020; Mammoth der"
    reference_impl = "mammoth"
    replays = True
    defaults = REPLAY_DEFAULTS
    memory = "reservoir"
    reservoir = ("x", "logits")
    options = {"alpha": Option(0.3, "weight of the logit-matching loss")}

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        return exemplars(s, s.buffer_size, True, "reservoir buffer") + [logits_store(s)]

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = ctx.model(x)
        ctx.keep["logits"] = out.detach()
        loss = F.cross_entropy(out, y)
        if ctx.replay_batch:
            buf = ctx.replay(ctx.replay_batch)
            loss = loss + ctx.options["alpha"] * F.mse_loss(ctx.model(buf["x"]), buf["logits"])
        ctx.backward(loss)
        return loss.detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + s.replay_batch)


class DERMammoth(DER):
    """Mammoth's ``der`` (models/der.py:29-48): the batch's forward, then a replay
    batch's forward, both graphs alive until one backward of the summed loss (added in
    place into the cross-entropy); the batch's outputs are stored after the step.

    Where Mammoth's code changes memory: the buffer keeps images and logits only, no
    labels (der.py:46: ``add_data(examples=..., logits=...)``), on the host as float32
    (utils/buffer.py:314, 407-411); ``get_data`` gathers and augments there and copies
    to the device (utils/buffer.py:529-547); the loop's un-augmented batch is an input
    of every step (utils/training.py:100-106).
    """

    impl = "mammoth"
    codebase = MAMMOTH
    cites = ("models/der.py:29-48", "utils/buffer.py:314", "utils/buffer.py:407-411",
             "utils/buffer.py:529-547", "utils/training.py:100-106")

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        images = [st for st in super().stored(s, net, variant) if st.name != "buffer.labels"]
        return on_host(images)

    def batch_inputs(self, s: Scenario, variant: str = "main") -> dict:
        return loop_inputs(s)

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        outputs = ctx.model(x)
        loss = F.cross_entropy(outputs, y)
        if ctx.replay_batch:
            buf = get_data(ctx, ctx.replay_batch)
            buf_inputs, buf_logits = buf["x"], buf["logits"]
            buf_outputs = ctx.model(buf_inputs)
            loss_mse = ctx.options["alpha"] * F.mse_loss(buf_outputs, buf_logits)
            loss += loss_mse
        ctx.backward(loss)
        ctx.keep["logits"] = outputs.detach()
        return loss.detach()
