"""Seconds of real steps, each on a fresh random batch.

A step repeated on one batch drives the loss to zero within a few steps; the
gradients then underflow into subnormal floats, which the CPU handles ten times
slower (Mammoth's ResNet-18 step went from 0.33 s to 3.3 s that way here).  A
training loop never sees one batch twice in a row, so each timed step here gets
new inputs and labels, drawn outside the timed span.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from lightcl.runner import StepRunner, input_batch


def fresh_batch(r: StepRunner, generator: torch.Generator | None = None) -> None:
    """New inputs and labels for ``r``'s next step, in place (same shapes, same task)."""
    s = r.scenario
    device = r.x.device
    x = input_batch(s, s.batch_size, str(device.type), generator if device.type == "cpu" else None)
    r.x.copy_(x)
    k = s.classes // s.tasks
    seen = r.context.task + 1
    r.y.copy_(torch.randint((seen - 1) * k, seen * k, r.y.shape, generator=generator
                            if device.type == "cpu" else None).to(device))


def timed_step(r: StepRunner, generator: torch.Generator | None = None) -> float:
    """Seconds of one step on a fresh batch (the CUDA queue drained before and after)."""
    fresh_batch(r, generator)
    cuda = r.x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    r.step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


def median_step_seconds(r: StepRunner, steps: int, warmup: int = 1) -> float:
    """Median seconds of ``steps`` steps after ``warmup`` (optimizer state, caches)."""
    g = torch.Generator().manual_seed(1)
    for _ in range(warmup):
        timed_step(r, g)
    return statistics.median(timed_step(r, g) for _ in range(steps))


def measured_medians(runners: dict, rounds: int, warmup: int = 1,
                     each_round: Callable[[int], None] = lambda i: None) -> dict:
    """Each runner's median step seconds over ``rounds`` rounds of one step of each, in turn
    (a slow spell of a shared machine falls on all of them alike), after ``warmup`` rounds."""
    g = torch.Generator().manual_seed(1)
    for _ in range(warmup):
        for r in runners.values():
            timed_step(r, g)
    samples: dict = {k: [] for k in runners}
    for i in range(rounds):
        each_round(i)
        for k, r in runners.items():
            samples[k].append(timed_step(r, g))
    return {k: statistics.median(v) for k, v in samples.items()}
