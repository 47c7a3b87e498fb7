"""SparCL (Wang et al., NeurIPS 2022): sparse training on top of ER or DER++.

PyTorch runs SparCL's sparse weights as dense tensors multiplied by masks: the
public code keeps a float32 weight mask and a float32 gradient mask for every
pruned weight tensor and applies them in place.  So in the ``runtime``
convention sparsity saves no FLOP and no byte (FlopCounterMode counts the dense
kernels), and the masks cost two float32 copies of the weights; the ``paper``
convention credits the ideal saving (weights, gradients and FLOPs x density).
SparCL's data removal (dropping easy examples late in training) is not modelled.
"""
from __future__ import annotations

import torch
from torch import nn

from costmodel.methods.base import Method, PaperTerms, StepContext, Stored, exemplars
from costmodel.methods.der import logits_store
from costmodel.methods.derpp import DERPP_OPTIONS, derpp_step
from costmodel.methods.er import REPLAY_DEFAULTS, concat_replay_step
from costmodel.scenario import Scenario


def weight_masks(s: Scenario, net: nn.Module) -> list[Stored]:
    n = sum(p.numel() for p in net.parameters() if p.dim() > 1)
    return [Stored("sparcl.weight_mask", (n,), torch.float32, "method_state",
                   "float32 mask of every pruned weight tensor"),
            Stored("sparcl.grad_mask", (n,), torch.float32, "method_state",
                   "float32 gradient mask (dynamic gradient masking)")]


class _SparCL(Method):
    sparse = True
    replays = True
    defaults = {**REPLAY_DEFAULTS, "sparsity": 0.9}
    trains = False  # SparCL's dynamic masking is not written for the trainer
    paper = "Wang et al., NeurIPS 2022 (neu-spiral/SparCL)"

    def paper_terms(self, s: Scenario) -> PaperTerms:
        raise NotImplementedError

    def notes(self, s: Scenario) -> list[str]:
        return [f"runtime: sparsity {s.sparsity} is executed as masked dense tensors: no FLOP or "
                "byte saved, and the masks cost two float32 copies of the weights"]


class SparCLER(_SparCL):
    name = "sparcl-er"
    summary = "SparCL on ER: masked sparse weights and gradients, replay concatenated"

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        return exemplars(s, s.buffer_size, True, "reservoir buffer") + weight_masks(s, net)

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return concat_replay_step(ctx, x, y)

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + s.replay_batch, density=1 - s.sparsity,
                          note="the table's SparCL-ER memory (106.6 / 407.0 MiB) sits 2.0 MiB "
                               "under 0.2P + (B + R)a; the cause is not known")


class SparCLDERpp(_SparCL):
    name = "sparcl-derpp"
    summary = "SparCL on DER++: masked sparse weights and gradients, one summed backward"
    options = DERPP_OPTIONS

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        return (exemplars(s, s.buffer_size, True, "reservoir buffer") + [logits_store(s)]
                + weight_masks(s, net))

    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return derpp_step(ctx, x, y, separate=False)

    def paper_terms(self, s: Scenario) -> PaperTerms:
        return PaperTerms(samples=s.batch_size + 2 * s.replay_batch, density=1 - s.sparsity)
