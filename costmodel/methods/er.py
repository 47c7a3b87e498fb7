"""Experience Replay: a replay batch from a reservoir buffer joins every batch.

As Mammoth's ``er``: the replayed samples are concatenated with the batch and
go through one forward and one backward.  The buffer keeps (float) images and
labels on the device and fills by reservoir sampling from the first task on,
so every task replays.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.codebases.mammoth import MAMMOTH, get_data, loop_inputs, on_host
from costmodel.methods.base import Method, PaperTerms, StepContext, Stored, exemplars
from costmodel.scenario import Scenario

REPLAY_DEFAULTS = {"buffer_size": 500, "replay_batch": lambda s: s.batch_size or 32}
"""Mammoth's: a 500-exemplar buffer, replay batch = batch size."""


class ER(Method):
    name = "er"
    summary = "Experience Replay: replayed exemplars concatenated with every batch"
    paper = "Chaudhry et al., 2019; Mammoth er"
    reference_impl = "mammoth"
    replays = True
    defaults = REPLAY_DEFAULTS
    memory = "reservoir"
    reservoir = ("x", "y")

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        return exemplars(s, s.buffer_size, True, "reservoir buffer, float images as Mammoth keeps them")

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return concat_replay_step(ctx, x, y)

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + s.replay_batch,
                          note="the replayed samples join the batch: activations of B + R samples")


def concat_replay_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One forward and backward over the batch and a replay batch, concatenated."""
    inputs, labels = x, y
    if ctx.replay_batch:  # an empty buffer (the very first steps) replays nothing
        buf = ctx.replay(ctx.replay_batch)
        inputs, labels = torch.cat((x, buf["x"])), torch.cat((y, buf["y"]))
    loss = F.cross_entropy(ctx.model(inputs), labels)
    ctx.backward(loss)
    return loss.detach()


class ERMammoth(ER):
    """Mammoth's ``er`` (models/er.py:45-67): the replay batch from ``get_data`` is
    concatenated with the batch, one forward and one backward over B + R, the outputs
    and the augmented replay batch referenced through the backward.

    Where Mammoth's code changes memory (cited at the codebase's commit): the buffer
    (float32 un-augmented images, int64 labels) is on the host (utils/buffer.py:314);
    the replay batch is gathered and augmented there, then copied to the device
    (utils/buffer.py:529-547); the loop's un-augmented batch is an input of every step
    (utils/training.py:100-106).
    """

    impl = "mammoth"
    codebase = MAMMOTH
    cites = ("models/er.py:45-67", "utils/buffer.py:314", "utils/buffer.py:529-547",
             "utils/training.py:100-106")

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        return on_host(super().stored(s, net, variant))

    def batch_inputs(self, s: Scenario, variant: str = "main") -> dict:
        return loop_inputs(s)

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        inputs, labels = x, y
        if ctx.replay_batch:
            buf = get_data(ctx, ctx.replay_batch)
            buf_inputs, buf_labels = buf["x"], buf["y"]
            inputs, labels = torch.cat((x, buf_inputs)), torch.cat((y, buf_labels))
        outputs = ctx.model(inputs)
        loss = F.cross_entropy(outputs, labels)
        ctx.backward(loss)
        return loss.detach()
