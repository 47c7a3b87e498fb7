"""The training-side StepContext: runs a method's step on real tensors.

The engine traces the same ``Method.step`` through its own context on meta
tensors; this one really calls ``loss.backward()`` and really samples the
replay buffer (with :func:`costmodel.engine.sample_exemplars`, so both sides
allocate alike).  An observer hears about every backward call, which is how
measurement splits a step into forward and backward.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn

from costmodel.engine import sample_exemplars


class BackwardObserver(Protocol):
    def before_backward(self) -> None: ...

    def after_backward(self) -> None: ...


class TrainContext:
    def __init__(self, model: nn.Module, task: int = 0, state: Mapping[str, Any] | None = None,
                 buffer: Mapping[str, torch.Tensor] | None = None,
                 dtype: torch.dtype = torch.float32, tasks: int = 1, classes: int = 10,
                 variant: str = "main", options: Mapping[str, Any] | None = None,
                 replay_batch: int = 0, observer: BackwardObserver | None = None,
                 inputs: Mapping[str, torch.Tensor] | None = None,
                 zero_grad: Any = None) -> None:
        self.model, self.task, self.state = model, task, dict(state or {})
        self.buffer = dict(buffer or {})
        self.dtype, self.tasks, self.classes = dtype, tasks, classes
        self.variant, self.options = variant, dict(options or {})
        self.replay_batch = replay_batch
        self.observer = observer
        self.keep: dict[str, torch.Tensor] = {}
        self.inputs = dict(inputs or {})
        self._zero_grad = zero_grad

    def backward(self, loss: torch.Tensor) -> None:
        if self.observer is not None:
            self.observer.before_backward()
        loss.backward()
        if self.observer is not None:
            self.observer.after_backward()

    def zero_grad(self) -> None:
        """The optimizer's zero_grad, where the method's code calls it."""
        if self._zero_grad is not None:
            self._zero_grad(set_to_none=True)

    def replay(self, n: int) -> dict[str, torch.Tensor]:
        if not self.buffer:
            raise RuntimeError("replay() on an empty buffer")
        return sample_exemplars(self.buffer, n, self.dtype)
