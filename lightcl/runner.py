"""One method's training step on a real device, built exactly as the engine traces it.

:func:`build_runner` makes the network for the scenario's variant (the last
task by default), its frozen part, teacher copies and stored state (random
contents of the declared shapes and dtypes), an optimizer over the trainable
parameters and a batch; :meth:`StepRunner.step` runs ``zero_grad``, the
method's step and ``optimizer.step()``.  ``costcl validate`` measures it; the
trainer runs the same pieces with real data.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from costmodel import engine, methods
from costmodel.estimation import trainable_set
from costmodel.methods.base import Method, Stored
from costmodel.models.registry import build_model
from costmodel.scenario import Scenario
from lightcl.context import BackwardObserver, TrainContext
from lightcl.optim import build_optimizer


def random_tensor(st: Stored, classes: int, device: str,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Contents for a declared stored tensor: the right shape, dtype and value range."""
    if st.dtype == torch.bool:
        return torch.rand(st.shape, generator=generator, device=device).lt(0.5)
    if st.dtype == torch.uint8:
        return torch.randint(0, 256, st.shape, generator=generator, dtype=torch.uint8, device=device)
    if not st.dtype.is_floating_point:
        return torch.randint(0, classes, st.shape, generator=generator, device=device)
    return torch.rand(st.shape, generator=generator, device=device, dtype=st.dtype)


@dataclass
class StepRunner:
    scenario: Scenario
    method: Method
    net: nn.Module
    optimizer: torch.optim.Optimizer
    context: TrainContext
    x: torch.Tensor
    y: torch.Tensor
    trainable: frozenset[str]
    extra: list[torch.Tensor] = field(default_factory=list)
    """Stored state and teachers' tensors, for trackers to register."""

    def step(self) -> torch.Tensor:
        self.begin_step()
        with anomaly(self.method, self.context.variant):
            loss = self.method.step(self.context, self.x, self.y)
        self.optimizer.step()
        return loss

    def begin_step(self) -> None:
        """What the loop does before a step: a fresh ``ctx.keep`` where the trainer's context
        is new each step, and ``zero_grad`` unless the method's code calls it itself."""
        if not self.method.codebase.loop_holds_kept:
            self.context.keep = {}
        if not self.method.zeroes_grad_in_step:
            self.optimizer.zero_grad(set_to_none=True)


@contextlib.contextmanager
def anomaly(method: Method, variant: str) -> Iterator[None]:
    """Anomaly detection where the implementation's code switches it on."""
    if not method.anomaly_mode(variant):
        yield
        return
    with warnings.catch_warnings():  # the code under test chose it; no need to warn
        warnings.filterwarnings("ignore", "Anomaly Detection has been enabled")
        mode = torch.autograd.detect_anomaly(check_nan=True)
    with mode:
        yield


def prepare(method: Method, ctx: TrainContext, net: nn.Module, s: Scenario,
            trainable: frozenset[str]) -> None:
    """Run the implementation's work before a task's steps, with the flags it ran under."""
    if not method.prepares(ctx.variant):
        return
    before = method.prepared_trainable(s, net, ctx.variant)
    if before is not None:
        for name, p in net.named_parameters():
            p.requires_grad_(name in before)
    method.prepare(ctx)
    for name, p in net.named_parameters():
        p.requires_grad_(name in trainable)


def build_network(s: Scenario, method: Method, tasks_seen: int, device: str) -> nn.Module:
    dtype = s.torch_dtype

    def build() -> nn.Module:
        return build_model(s.model, s.classes, s.in_channels, device, dtype)

    with torch.device(device):
        return method.network(s, build, tasks_seen)


def build_runner(s: Scenario, device: str = "cpu", variant: str = "main", seed: int | None = 0,
                 observer: BackwardObserver | None = None) -> StepRunner:
    """``seed=None`` draws without a generator (fake and meta tensors take none)."""
    s = methods.resolve(s)
    method = methods.get(s.method, s.impl)
    gen = None
    if seed is not None and device == "cpu":
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
    seen = engine.tasks_seen(s, variant)
    net = build_network(s, method, seen, device)
    meta_model = engine.step_model(s, method, variant)
    trainable = trainable_set(s, method, meta_model, variant)
    for name, p in net.named_parameters():
        p.requires_grad_(name in trainable)
    net.train()
    stored = method.stored(s, net, variant)
    tensors = {st.name: random_tensor(st, _id_range(s, st), device, gen) for st in stored}
    buffer, state = engine.split_state(stored, tensors)
    extra = list(tensors.values())
    for _ in range(method.teachers(s, variant)):
        with torch.device(device):  # deepcopy fails on fake tensors: build it, as the engine does
            teacher = method.teacher_network(
                s, lambda: build_model(s.model, s.classes, s.in_channels, device, s.torch_dtype),
                seen)
        teacher.requires_grad_(False).eval()
        state["teacher"] = teacher
        extra += list(teacher.parameters()) + list(teacher.buffers())
    replay = method.replay_batch(s, variant)
    inputs = {name: torch.rand((s.batch_size, *shape), generator=gen, device=device, dtype=dt)
              if dt.is_floating_point else torch.zeros((s.batch_size, *shape), device=device, dtype=dt)
              for name, (shape, dt) in method.batch_inputs(s, variant).items()}
    ctx = TrainContext(net, seen - 1, state, buffer, s.torch_dtype, s.tasks, s.classes, variant,
                       s.options, replay, observer, inputs)
    prepare(method, ctx, net, s, trainable)
    x = input_batch(s, s.batch_size, device, gen)
    k = s.classes // s.tasks  # labels from the current task's classes
    y = torch.randint((seen - 1) * k, seen * k, (s.batch_size,), generator=gen, device=device)
    opt = build_optimizer(s.optimizer, net.parameters())
    ctx._zero_grad = opt.zero_grad
    return StepRunner(s, method, net, opt, ctx, x, y, trainable, extra)


def input_batch(s: Scenario, n: int, device: str,
                generator: torch.Generator | None) -> torch.Tensor:
    """``n`` random samples of the scenario's input: token ids in [0, vocab) (an embedding
    indexes with them, so they must be in range), else floats in [0, 1)."""
    shape = (n, *s.input_shape)
    if s.input_dtype == "int64":
        return torch.randint(0, s.vocab, shape, generator=generator, device=device)
    return torch.rand(shape, generator=generator, device=device, dtype=s.torch_dtype)


def _id_range(s: Scenario, st: Stored) -> int:
    """Upper bound of a stored integer tensor's values: stored token ids index the
    embedding (vocab), other integers are labels (classes)."""
    if s.input_dtype == "int64" and st.name == "buffer.images":
        return s.vocab or s.classes
    return s.classes


def describe(runner: StepRunner) -> dict[str, Any]:
    return {"trainable_params": sum(p.numel() for p in runner.net.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in runner.net.parameters())}
