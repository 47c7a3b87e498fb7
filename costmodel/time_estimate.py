"""The ``time`` block of an estimate: seconds per step, hours per run, shares by class.

Reads the variants' traces and plans ``estimate`` already built (no trace of its
own) and the formulas of :mod:`costmodel.timing`; a profile says how fast the
device is (:mod:`costmodel.time_profile`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from costmodel.time_profile import TimeProfile
from costmodel.timing import StepTimer, run_seconds

TEST_SHARE = 5
"""Test images per task are a fifth of the training images (CIFAR's 10,000 of 50,000;
the synthetic data's split), evaluated after each task on every task seen."""


@dataclass(frozen=True)
class TimeCost:
    profile: str
    calibrated: bool
    profile_source: str
    step_s: float
    forward_s: float
    backward_s: float
    optimizer_s: float
    run_train_s: float
    """Every step of the schedule and the work between them (herding, Fisher passes)."""
    evaluation_s: float
    """The evaluation after each task (a forward over the test images of the tasks seen)."""
    share: dict[str, float] = field(default_factory=dict)

    @property
    def run_h(self) -> float:
        return (self.run_train_s + self.evaluation_s) / 3600

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "calibrated": self.calibrated,
                "profile_source": self.profile_source, "step_s": self.step_s,
                "forward_s": self.forward_s, "backward_s": self.backward_s,
                "optimizer_s": self.optimizer_s, "run_h": self.run_h,
                "run_train_s": self.run_train_s, "evaluation_s": self.evaluation_s,
                "share": dict(self.share)}


_TIMERS: dict[tuple[int, tuple], tuple[Any, StepTimer]] = {}


def timer(model: Any, profile: TimeProfile) -> StepTimer:
    """One :class:`StepTimer` per (step model, profile) for the process; the model is
    held, so its id is never reused for another while the entry lives."""
    key = (id(model), profile.digest())
    hit = _TIMERS.get(key)
    if hit is None or hit[0] is not model:
        hit = _TIMERS[key] = (model, StepTimer(model.trace, profile, model.anomaly))
    return hit[1]


def time_cost(s: Any, method: Any, models: dict[str, Any], plans: dict[str, Any],
              profile: TimeProfile, images_per_task: int | None = None,
              test_images_per_task: int | None = None) -> TimeCost:
    """The time block for a resolved scenario with its variants' models and plans."""
    from costmodel.estimation import growth

    B, opt = s.batch_size, s.optimizer

    def seconds(variant: str, b: int, r: int) -> float:
        return timer(models[variant], profile).seconds(plans[variant].selection, opt, b, r)

    def step_s(variant: str, task: int, b: int, r: int) -> float:
        if method.grows and task > 0:
            return growth(method, lambda v: seconds(v, b, r), task)
        if method.grows:
            return seconds("first", b, r)
        return seconds(variant, b, r)

    main = timer(models["main"], profile)
    sel = plans["main"].selection
    R = method.replay_batch(s)
    st = main.step(sel, opt, B, R)
    forward = main.forward_lin(sel)
    schedule = list(method.schedule(s))
    if images_per_task is not None:
        schedule = [_with_images(ph, images_per_task) for ph in schedule]
    test = (test_images_per_task if test_images_per_task is not None
            else s.images_per_task() // TEST_SHARE)
    train_s, eval_s = run_seconds(schedule, B, s.tasks,
                                  lambda v: method.replay_batch(s, v), step_s, forward,
                                  main.seconds(sel, None, 1, 0), test,
                                  lambda b: main.forward_seconds(sel, b))
    return TimeCost(profile.name, profile.calibrated, profile.source, st.step_s, st.forward_s,
                    st.backward_s, st.optimizer_s, train_s, eval_s, st.share)


def _with_images(phase: Any, images: int) -> Any:
    """A phase over ``images`` training images per task (a smaller data set than the
    scenario's, as ``costcl train --data-root synthetic:N`` runs), memory kept as it is."""
    import dataclasses

    return dataclasses.replace(phase, images=images)
