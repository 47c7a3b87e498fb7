"""What a continual-learning method is to costcl: data plus a few small functions.

A method says, once, for both the engine and the bundled trainer:

* ``step(ctx, x, y)``: one training step, written against a
  :class:`StepContext`.  The engine runs it on meta tensors to trace it; the
  trainer runs it on real ones.  Same code, so the prediction and the
  measurement describe the same step.
* ``network`` / ``trainable``: which module trains, and which of its
  parameters (LightCL's frozen prefix, MEMO's new specialised block, ...).
* ``stored``: what it keeps between steps (replay exemplars, stored logits,
  Fisher information, a frozen teacher, masks), each with its shape, dtype and
  the category it is reported in.
* ``schedule``: the whole continual-learning run as phases of identical steps.

Adding a method is one file in this package with a subclass of :class:`Method`
(it is found by name) and its test.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from costmodel.scenario import Scenario


@dataclass(frozen=True)
class Option:
    default: Any
    help: str


@dataclass(frozen=True)
class Stored:
    """One tensor a method keeps between steps."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    category: str
    """'buffer' (replay exemplars and what travels with them) or 'method_state'."""
    note: str = ""

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class PaperTerms:
    """A method's terms in the ``paper`` convention (see :mod:`costmodel.paper`)."""

    samples: int
    """Samples per step whose activations and FLOPs count (batch + replayed)."""
    weights: float = 1.0
    """Multiples of the model's parameter memory P held as weights."""
    gradients: float | None = None
    """Multiples of P held as gradients (``None``: the trainable part's share)."""
    extra_params: float = 0.0
    """Further parameter-sized tensors the method stores (Fisher, columns, ...)."""
    flops_factor: float = 1.0
    """Multiplier on the whole run's FLOPs (JOINT retrains, PNN's columns)."""
    density: float = 1.0
    """Fraction of weights, gradients and FLOPs kept by sparse training."""
    note: str = ""


@dataclass(frozen=True)
class Phase:
    """Part of a schedule in which every step looks alike."""

    name: str
    tasks: int
    """Tasks this phase covers."""
    images: int
    """Training images seen per epoch of each of those tasks."""
    epochs: int
    variant: str = "main"
    """Which step (traced separately when it differs): 'main' or e.g. 'first'."""
    extra_flops: int = 0
    """Work outside the steps, per task (Fisher estimation, exemplar selection)."""


class StepContext(Protocol):
    """What a step sees.  Training and tracing each provide one."""

    model: nn.Module
    task: int
    state: Mapping[str, Any]

    def backward(self, loss: torch.Tensor) -> None: ...

    def replay(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` exemplars drawn from the buffer: 'x', 'y' and what else it stores."""
        ...


class Method:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    replays: ClassVar[bool] = False
    """Does a step draw a replay batch (``Scenario.replay_batch``) from a buffer?"""
    defaults: ClassVar[Mapping[str, Any]] = {}
    """Scenario fields the method's paper fixes (batch size, optimizer, ...)."""
    options: ClassVar[Mapping[str, Option]] = {}

    # -- structure -----------------------------------------------------------
    def network(self, s: Scenario, build: Callable[[], nn.Module]) -> nn.Module:
        """The module that trains; most methods train the plain model."""
        return build()

    def trainable(self, s: Scenario, net: nn.Module) -> frozenset[str] | None:
        """Parameters that train (``None``: all of them)."""
        return None

    def stored(self, s: Scenario, net: nn.Module) -> list[Stored]:
        return []

    def teachers(self, s: Scenario) -> int:
        """Frozen copies of the network kept for distillation."""
        return 0

    def paper_terms(self, s: Scenario) -> PaperTerms:
        """The table's accounting; by default: weights, gradients, every sample's activations."""
        return PaperTerms(samples=s.batch_size + (s.replay_batch if self.replays else 0))

    # -- schedule ------------------------------------------------------------
    def schedule(self, s: Scenario) -> list[Phase]:
        return [Phase("all tasks", s.tasks, s.images_per_task(), s.epochs)]

    # -- the step, shared by engine and trainer ------------------------------
    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------
    def option(self, s: Scenario, key: str) -> Any:
        return s.options.get(key, self.options[key].default)


def exemplar(s: Scenario, n: int, float_images: bool, note: str) -> list[Stored]:
    """The image and label tensors of an ``n``-exemplar buffer."""
    dtype = s.torch_dtype if float_images else torch.uint8
    return [
        Stored("buffer.images", (n, *s.input_shape), dtype, "buffer", note),
        Stored("buffer.labels", (n,), torch.int64, "buffer", "class label of each exemplar"),
    ]
