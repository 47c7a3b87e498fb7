"""Sweeps for charts: exemplars that fit as the budget grows, peak memory as the batch grows.

Both use :class:`budgets.fit.PeakModel`, the peak ``costcl fit`` and ``costcl
estimate`` compute, so a chart and a table of the same scenario agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from budgets.devices import DEVICES, MIB
from budgets.fit import PeakModel, largest, stored_format
from costmodel import methods as catalog
from costmodel.scenario import Scenario

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Curves:
    """Per method, a list of (x, y) points; ``skipped``: methods the sweep does not apply to."""
    x_label: str
    points: dict[str, list[tuple[float, int | None]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def budget_grid_mib(steps: int = 40) -> list[float]:
    """Budgets from a little above zero to 10% past the largest device profile."""
    top = max(d.usable_mib for d in DEVICES.values()) * 1.1
    return [round(top * i / steps, 1) for i in range(1, steps + 1)]


def _remembered(name: str, parts: tuple, compute: Any) -> Curves:
    """A sweep is hundreds of peaks: kept on disk for the next report (costmodel.cache)."""
    from costmodel import cache
    return cache.remembered(f"budgets.{name}", parts, compute, Curves, model=parts[0].model,
                            packages=("costmodel", "budgets"),
                            methods=(parts[0].method, *parts[1]))


def exemplar_curves(s: Scenario, names: list[str], budgets_mib: list[float]) -> Curves:
    """The largest buffer that fits each budget beside everything else the step needs,
    in each method's own exemplar format (LightCL forwards every stored sample, so its
    samples cost activations too).  ``None``: not even an empty buffer fits."""
    return _remembered("exemplar_curves", (s, names, budgets_mib),
                       lambda: _exemplar_curves(s, names, budgets_mib))


def _exemplar_curves(s: Scenario, names: list[str], budgets_mib: list[float]) -> Curves:
    out = Curves("memory budget (MiB)")
    for name in names:
        ms = catalog.named(s, name)
        if not stored_format(catalog.resolve(ms)):
            out.skipped.append(name)
            continue
        pm = PeakModel(ms)
        batch = pm.s.batch_size
        row = []
        for b in budgets_mib:
            n = largest(lambda k, b=b: pm.peak(batch, k) <= b * MIB, 0,
                        cap=pm.buffer_limit or 1 << 24)
            row.append((b, n if n >= 0 else None))
        out.points[name] = row
    return out


def batch_curves(s: Scenario, names: list[str], batches: tuple[int, ...] = BATCHES) -> Curves:
    """The runtime peak (bytes) of one step of each method at each batch size; a method
    that replays keeps its own replay batch rule (e.g. equal to the batch)."""
    return _remembered("batch_curves", (s, names, batches),
                       lambda: _batch_curves(s, names, batches))


def _batch_curves(s: Scenario, names: list[str], batches: tuple[int, ...]) -> Curves:
    out = Curves("batch size")
    for name in names:
        pm = PeakModel(catalog.named(s, name))
        out.points[name] = [(b, pm.peak(b)) for b in batches]
    return out
