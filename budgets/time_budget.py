"""Time budgets: how many epochs, or which configurations, fit in hours of a device.

Every figure is ``estimate``'s ``time.run_h`` on a device profile (the same
answer ``costcl estimate --device-profile`` prints), so a budget and an estimate
of the same scenario cannot disagree.  The run's time grows with the epochs (the
evaluation after each task does not), so the epochs are a doubling then a
bisection, as the memory searches are.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from costmodel import methods
from costmodel.errors import CostclError
from costmodel.estimation import estimate
from costmodel.scenario import Scenario
from costmodel.time_profile import TimeProfile

UNITS_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(text: str | float, flag: str = "--time-budget") -> float:
    """'2h', '90m', '1.5h', '3600s', '1d' -> seconds; a number needs its unit."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)\s*", str(text).lower())
    if not m or m.group(2) not in UNITS_S:
        raise CostclError(f"{flag} {text!r} is not a duration; write a number and a unit: "
                          "2h, 90m, 3600s or 1d")
    seconds = float(m.group(1)) * UNITS_S[m.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise CostclError(f"{flag} {text!r} must be a positive, finite duration, e.g. 2h")
    return seconds


def run_seconds(s: Scenario, profile: TimeProfile, epochs: int | None = None) -> float:
    """A resolved scenario's whole-run seconds (at ``epochs`` per task if given)."""
    if epochs is not None:
        options = dict(s.options)
        if "init_epochs" in methods.get(s.method, s.impl).options:
            options["init_epochs"] = epochs  # PyCIL's first task scales too
        s = s.replace(epochs=epochs, options=options)
    t = estimate(s, profile=profile).time
    assert t is not None
    return t.run_h * 3600


def most_epochs(s: Scenario, profile: TimeProfile, budget_s: float) -> int:
    """The most epochs per task whose run fits in ``budget_s`` (0: not even one)."""
    from budgets.fit import largest

    return largest(lambda e: run_seconds(s, profile, e) <= budget_s, 1, cap=1 << 20)


@dataclass
class TimeRow:
    method: str
    step_s: float
    run_h_per_epoch: float
    """The whole run with one epoch per task (evaluation included)."""
    epochs: int
    """The most epochs per task that fit in the budget."""
    run_h: float
    """The whole run at those epochs."""
    scenario_epochs: int
    scenario_run_h: float
    """The run at the scenario's own epochs, and whether that fits."""
    fits: bool

    def to_json(self) -> dict[str, Any]:
        return vars(self)


def time_row(name: str, s: Scenario, profile: TimeProfile, budget_s: float) -> TimeRow:
    e = estimate(s, profile=profile)
    assert e.time is not None
    epochs = most_epochs(s, profile, budget_s)
    return TimeRow(name, e.time.step_s, run_seconds(s, profile, 1) / 3600, epochs,
                   run_seconds(s, profile, epochs) / 3600 if epochs else 0.0, s.epochs,
                   e.time.run_h, e.time.run_h * 3600 <= budget_s)


def time_budget(budget_s: float, base: Scenario, names: list[str], profile: TimeProfile,
                progress: Callable[[str], None] | None = None) -> list[TimeRow]:
    """For each method: its step, its run per epoch a task, and the epochs that fit."""
    methods.check_shared(base, names)
    rows = []
    for name in names:
        if progress:
            progress(name)
        s = methods.resolve(methods.named(base, name))
        rows.append(time_row(name, s, profile, budget_s))
    return rows
