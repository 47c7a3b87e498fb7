"""Step costs in microseconds, after one trace.

``estimate()`` answers a whole scenario (schedule, notes, per-layer table).
When a tool sweeps configurations (a fit search, a design-space plot), only
the step matters; :class:`StepEstimator` keeps the trace and one plan per
freeze point, and evaluates a (batch, optimizer, freeze point) in a few
microseconds: the memory timeline is a set of planes in the batch sizes.
"""
from __future__ import annotations

from dataclasses import dataclass

from costmodel import engine, methods
from costmodel.estimation import train_from, trainable_set
from costmodel.memory.optimizers import OPTIMIZERS, optimizer
from costmodel.scenario import Scenario
from costmodel.time_profile import TimeProfile, for_device
from costmodel.trace.records import at


@dataclass(frozen=True, slots=True)
class StepPoint:
    forward_flops: int
    backward_flops: int
    peak_bytes: int
    phase: str
    step_s: float
    """Seconds of the step on the estimator's device profile (:mod:`costmodel.timing`)."""


class StepEstimator:
    def __init__(self, s: Scenario, profile: TimeProfile | None = None) -> None:
        from costmodel.time_estimate import timer

        self.scenario = methods.resolve(s)
        self.method = methods.get(self.scenario.method, self.scenario.impl)
        self.model = engine.step_model(self.scenario, self.method)
        self._default = trainable_set(self.scenario, self.method, self.model)
        self._sets: dict[str | None, frozenset[str]] = {None: self._default}
        # what Plan.memory's ``constants`` add to the step: stored tensors and method state
        stored = engine.stored_bytes(self.method.stored(self.scenario, self.model.network),
                                     self.scenario.device)
        self._outside = sum(stored.values()) + self.model.state_bytes["method_state"]
        self.timer = timer(self.model, profile or for_device(self.scenario.device))

    def step(self, batch_size: int, optimizer_name: str = "sgd", freeze_from: str | None = None,
             replay_batch: int = 0) -> StepPoint:
        tset = self._sets.get(freeze_from)
        if tset is None:
            tset = self._sets[freeze_from] = train_from(self.model, freeze_from)
        plan = self.model.plan(tset, False, self.scenario.device, (batch_size, replay_batch))
        opt = OPTIMIZERS.get(optimizer_name) or optimizer(optimizer_name)
        peak, phase = plan.peak(batch_size, replay_batch, opt, self.scenario.device,
                                self._outside)  # the op-level peak, as memory() gives it
        fl = plan.flops
        return StepPoint(at(fl.forward, batch_size, replay_batch),
                         at(fl.grad_input, batch_size, replay_batch)
                         + at(fl.grad_weight, batch_size, replay_batch),
                         peak, phase,
                         self.timer.seconds(plan.selection, opt.name, batch_size, replay_batch))
