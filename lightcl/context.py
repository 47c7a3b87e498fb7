"""The training-side StepContext: runs a method's step on real tensors.

The engine traces the same ``Method.step`` through its own context on meta
tensors; this one really calls ``loss.backward()`` and really samples the
replay buffer (with :func:`costmodel.engine.sample_exemplars`, so both sides
allocate alike).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from costmodel.engine import sample_exemplars


class TrainContext:
    def __init__(self, model: nn.Module, task: int = 0, state: Mapping[str, Any] | None = None,
                 buffer: Mapping[str, torch.Tensor] | None = None,
                 dtype: torch.dtype = torch.float32, tasks: int = 1, classes: int = 10,
                 on_backward: Callable[[], None] | None = None, variant: str = "main",
                 options: Mapping[str, Any] | None = None, replay_batch: int = 0) -> None:
        self.model, self.task, self.state = model, task, dict(state or {})
        self.variant, self.options = variant, dict(options or {})
        self.replay_batch = replay_batch
        self.buffer = dict(buffer or {})
        self.dtype, self.tasks, self.classes = dtype, tasks, classes
        self._on_backward = on_backward

    def backward(self, loss: torch.Tensor) -> None:
        if self._on_backward is not None:
            self._on_backward()
        loss.backward()

    def replay(self, n: int) -> dict[str, torch.Tensor]:
        if not self.buffer:
            raise RuntimeError("replay() on an empty buffer")
        return sample_exemplars(self.buffer, n, self.dtype)
