"""Real optimizers for the names the engine costs (see costmodel.memory.optimizers)."""
from __future__ import annotations

from collections.abc import Iterable

import torch

from costmodel.memory.optimizers import optimizer as spec

MOMENTUM = 0.9


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float = 0.01) -> torch.optim.Optimizer:
    spec(name)  # unknown names fail with the same one-line error everywhere
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)
