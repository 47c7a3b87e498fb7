"""Latent replay: the buffer keeps activations at a cut layer, not images.

Pellegrini et al., "Latent Replay for Real-Time Continual Learning", IROS 2020
(Sec. III): the layers below the *latent replay layer* are frozen, the buffer
stores each kept sample's activations at that layer, and every step runs the
incoming batch through the frozen layers once, joins the replayed latents to
it, and trains only the layers above.  Ravaglia et al., "A TinyML Platform for
On-Device Continual Learning With Quantized Latent Replays", IEEE JETCAS 2021,
store the latents in 8 bits (``--option latent_bits=8``), which is what makes a
deep cut affordable on a microcontroller.

What costs what, and why edge users ask for the cut: below it, no gradients,
no optimizer state and no saved activations (the frozen layers run under
``no_grad``); above it, a normal step over B + R samples; the buffer holds
``buffer_size`` latents whose size is the cut layer's output (a deeper cut is
cheaper to train but, in a CIFAR ResNet, its maps are no smaller per sample
than the image until the last stage).

costcl's choices, where the papers leave room: the frozen layers run in
evaluation mode (their batch-norm statistics stay fixed, as frozen weights do);
the buffer fills by reservoir sampling from the first step, as ER's does, so the
lower layers are frozen from the start (the papers pretrain them: give the
weights through your own model factory); 8-bit latents are scaled per sample by
their maximum (a float32 scale each; activations after a ReLU are not negative).
Written only against the documented method API (docs/methods.md).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.errors import CostclError
from costmodel.methods.base import Method, Option, PaperTerms, StepContext, Stored
from costmodel.methods.er import REPLAY_DEFAULTS
from costmodel.models.staged import GlobalPool, split
from costmodel.scenario import Scenario


class LatentSplit(nn.Module):
    """The model as ``upper(lower(x))``, cut after the stage named ``cut``.

    ``latent_shape`` (per sample, without the batch) is measured once when it is
    built, by one sample through ``lower`` on the module's own device (meta when
    costcl traces it).
    """

    def __init__(self, model: nn.Module, cut: str, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        parts = split(model, "latent-replay")
        names = ["stem"] + [name for name, _ in parts.stages]
        cut = cut or names[-2]  # the stage before the last
        if cut not in names:
            raise CostclError(f"--option cut={cut}: {type(model).__name__} can be cut after "
                              f"{', '.join(names)}; choose one of them")
        k = names.index(cut)
        stages = [m for _, m in parts.stages]
        self.cut, self.cuts = cut, names
        self.lower = nn.Sequential(parts.stem, *stages[:k])
        self.upper = nn.Sequential(*stages[k:], GlobalPool(), parts.head)
        p = next(self.lower.parameters())
        with torch.no_grad():
            self.lower.eval()
            self.latent_shape = tuple(self.lower(torch.zeros((1, *input_shape), dtype=p.dtype,
                                                             device=p.device)).shape[1:])
            self.lower.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(x))


def quantize(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit latents and their per-sample scale (maximum / 255)."""
    scale = z.detach().flatten(1).amax(1).clamp_min(1e-12) / 255
    q = (z / scale.view(-1, *[1] * (z.dim() - 1))).round().clamp(0, 255).to(torch.uint8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return q.to(dtype) * scale.to(dtype).view(-1, *[1] * (q.dim() - 1))


class LatentReplay(Method):
    name = "latent-replay"
    summary = ("replay of stored activations at a cut layer: frozen below it, "
               "B + R samples trained above it (--option cut=, latent_bits=8)")
    paper = "Pellegrini et al., IROS 2020; 8-bit latents: Ravaglia et al., IEEE JETCAS 2021"
    replays = True
    defaults = REPLAY_DEFAULTS
    memory = "reservoir"
    reservoir = ("latent", "scale", "y")
    """What each kept sample leaves in the buffer ('scale' only with 8-bit latents)."""
    options = {
        "cut": Option("", "the latent replay layer: the stage whose output the buffer stores "
                          "(stem or a stage of the model: layer1..layer4 on ResNet-18, "
                          "stage_1..stage_3 on PyCIL's ResNets; default: the stage before "
                          "the last); it and everything before it are frozen"),
        "latent_bits": Option(32, "bits per stored latent: 32 (the model's float type) or 8 "
                                  "(uint8 with a float32 scale per sample)", choices=(32, 8)),
    }

    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        return LatentSplit(build(), self.option(s, "cut"), tuple(s.input_shape))

    def trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str]:
        return frozenset(n for n, _ in net.named_parameters() if n.startswith("upper."))

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        n, shape = s.buffer_size, tuple(net.latent_shape)
        if self.option(s, "latent_bits") == 8:
            return [Stored("buffer.latent", (n, *shape), torch.uint8, "buffer",
                           f"8-bit activations after {net.cut}"),
                    Stored("buffer.scale", (n,), torch.float32, "buffer", "scale of each latent"),
                    Stored("buffer.labels", (n,), torch.int64, "buffer", "class label of each latent")]
        return [Stored("buffer.latent", (n, *shape), s.torch_dtype, "buffer",
                       f"activations after {net.cut}"),
                Stored("buffer.labels", (n,), torch.int64, "buffer", "class label of each latent")]

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        net = ctx.model
        net.lower.eval()  # frozen: fixed batch-norm statistics too
        with torch.no_grad():
            z = net.lower(x)
        if ctx.options.get("latent_bits") == 8:
            ctx.keep["latent"], ctx.keep["scale"] = quantize(z)
        else:
            ctx.keep["latent"] = z
        inputs, labels = z, y
        if ctx.replay_batch:
            buf = ctx.replay(ctx.replay_batch)
            latents = buf["latent"]
            if latents.dtype == torch.uint8:
                latents = dequantize(latents, buf["scale"], z.dtype)
            inputs, labels = torch.cat((z, latents)), torch.cat((y, buf["y"]))
        loss = F.cross_entropy(net.upper(inputs), labels)
        ctx.backward(loss)
        return loss.detach()

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + s.replay_batch,
                          note="latent replay: the replayed latents join the batch above the "
                               "cut; below it the layers are frozen and keep no activations")
