"""What fits on a device: the largest batch and buffer, and which methods fit at all.

Every peak is the whole run's (:func:`costmodel.estimation.run_peak_memory`,
the function behind ``costcl estimate``'s ``memory.run_peak_bytes``): a
configuration fits when every step and every evaluation between them fits, so
an answer here and an estimate of the same scenario cannot disagree.  The runtime convention's peak grows with the batch
and with the buffer, so both searches are a doubling then a bisection.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from budgets.devices import MIB, DeviceProfile
from costmodel import engine, methods
from costmodel.estimation import run_peak_memory, variant_models
from costmodel.scenario import Scenario

CAP = 1 << 16


class PeakModel:
    """The runtime peak of one method's scenario as a function of batch and buffer."""

    def __init__(self, s: Scenario, count_host: bool = False) -> None:
        self.count_host = count_host
        """Add what the implementation keeps on the host (a unified-memory device)."""
        self.given = s
        """As the user gave it: defaults that follow the batch (a replay batch) keep following."""
        self.s = methods.resolve(s)
        self.method = methods.get(self.s.method, self.s.impl)
        self.models = variant_models(self.s, self.method)
        self.buffer_limit = self.method.buffer_limit(self.s)
        """The most samples the code can store (the LightCL repository: one batch)."""
        self._cache: dict[tuple[int, int], int] = {}

    def peak(self, batch: int, buffer: int | None = None) -> int:
        buffer = self.s.buffer_size if buffer is None else buffer
        key = (batch, buffer)
        if key not in self._cache:
            s = methods.resolve(self.given.replace(batch_size=batch, buffer_size=buffer))
            replay = self.method.replay_batch(s)
            peak = run_peak_memory(s, self.method, self.models, batch, replay).peak_bytes
            if self.count_host:
                net = self.models["main"].network
                peak += engine.stored_bytes(self.method.stored(s, net), s.device)["host"]
            self._cache[key] = peak
        return self._cache[key]

    def uses_buffer(self) -> bool:
        return self.peak(self.s.batch_size, 0) != self.peak(self.s.batch_size, 64)


def largest(fits: Any, start: int, cap: int = CAP) -> int:
    """The largest n in [start, cap] with fits(n), for fits decreasing in n (start - 1 if
    none); fits is never asked beyond ``cap``."""
    if not fits(start):
        return start - 1
    lo = start
    if start == 0:
        if cap < 1 or not fits(1):
            return 0
        lo = 1
    hi = None  # the smallest size known not to fit
    while lo < cap:
        probe = min(lo * 2, cap)
        if not fits(probe):
            hi = probe
            break
        lo = probe
    if hi is None:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


@dataclass
class MethodFit:
    method: str
    batch_size: int
    buffer_size: int
    peak_bytes: int
    fits: bool

    def to_json(self, usable: int) -> dict[str, Any]:
        return {"method": self.method, "batch_size": self.batch_size,
                "buffer_size": self.buffer_size, "peak_bytes": self.peak_bytes, "fits": self.fits,
                "short_by_bytes": max(0, self.peak_bytes - usable)}


@dataclass
class FitResult:
    device: DeviceProfile
    scenario: Scenario
    largest_batch: int
    """0: not even a batch of one fits."""
    peak_at_largest: int | None
    peak_at_next: int | None
    """The peak one sample further; ``None``: the largest batch is a task's every image."""
    largest_buffer: int | None
    """None: the method keeps no buffer; -1: none fits at this batch."""
    methods: list[MethodFit] = field(default_factory=list)
    time_budget_s: float | None = None
    time_profile: str | None = None
    """The device profile the times come from (with ``--time-budget``)."""
    time: list[Any] = field(default_factory=list)
    """:class:`~budgets.time_budget.TimeRow` of the scenario (at the batch that fits),
    then of each of ``methods``."""

    def to_json(self) -> dict[str, Any]:
        u = self.device.usable_bytes
        out = {"device": vars(self.device) | {"usable_mib": self.device.usable_mib},
               "usable_bytes": u, "scenario": self.scenario.to_json(),
               "largest_batch": self.largest_batch, "peak_at_largest_bytes": self.peak_at_largest,
               "peak_at_next_bytes": self.peak_at_next, "largest_buffer": self.largest_buffer,
               "methods": [m.to_json(u) for m in self.methods]}
        if self.time_budget_s is not None:
            out["time_budget_s"] = self.time_budget_s
            out["time_profile"] = self.time_profile
            out["time"] = [r.to_json() for r in self.time]
        return out


def fit(profile: DeviceProfile, s: Scenario, others: list[str] | None = None,
        progress: Callable[[str], None] | None = None, time_budget_s: float | None = None,
        time_profile: Any = None) -> FitResult:
    """The largest batch and buffer of ``s`` on ``profile``; which of ``others`` fit at all.
    ``progress`` hears each method's name as its costing starts (each may trace for seconds).
    ``time_budget_s``: also the epochs a task that fit in that time, on ``time_profile``
    (default: the device's datasheet speeds)."""
    tell = progress or (lambda name: None)
    tell(s.method)
    s = s.replace(device=profile.runs_on)
    usable = profile.usable_bytes
    pm = PeakModel(s, count_host=profile.unified)
    images = pm.s.images_per_task()  # no batch is larger than a task's training images
    batch = largest(lambda b: pm.peak(b) <= usable, 1, cap=min(CAP, images))
    buffer = None
    if pm.uses_buffer() or pm.buffer_limit is not None:
        at = max(batch, 1) if batch < pm.s.batch_size else pm.s.batch_size
        buffer = largest(lambda n: pm.peak(at, n) <= usable, 0, cap=pm.buffer_limit or 1 << 22)
    result = FitResult(profile, pm.s, batch, pm.peak(batch) if batch else None,
                       pm.peak(batch + 1) if batch < images else None, buffer)
    for name in others or []:
        tell(name)
        other = PeakModel(methods.named(s, name), count_host=profile.unified)
        peak = other.peak(other.s.batch_size)
        result.methods.append(MethodFit(name, other.s.batch_size, other.s.buffer_size, peak,
                                        peak <= usable))
    if time_budget_s is not None:
        from budgets.time_budget import time_row
        speeds = time_profile if time_profile is not None else profile.time_profile()
        result.time_budget_s, result.time_profile = time_budget_s, speeds.name
        fitted = pm.s if batch >= pm.s.batch_size else pm.s.replace(batch_size=max(batch, 1))
        result.time.append(time_row(s.method, methods.resolve(fitted), speeds, time_budget_s))
        for name in others or []:
            other = methods.resolve(methods.named(s, name))
            result.time.append(time_row(name, other, speeds, time_budget_s))
    return result


def stored_format(s: Scenario) -> int:
    """Bytes one more exemplar costs in the method's own format (labels, logits included)."""
    method = methods.get(s.method, s.impl)
    net = engine.step_model(s, method).network
    one = engine.stored_bytes(method.stored(s.replace(buffer_size=1), net))
    none = engine.stored_bytes(method.stored(s.replace(buffer_size=0), net))
    return one["buffer"] - none["buffer"]
