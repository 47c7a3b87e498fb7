"""One scenario, several methods: rows for `costcl compare`, relative to the first."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from costmodel import Scenario, methods
from costmodel.errors import CostclError
from costmodel.estimation import Estimate, estimate


@dataclass(frozen=True)
class Comparison:
    estimates: tuple[Estimate, ...]

    @property
    def base(self) -> Estimate:
        return self.estimates[0]

    def relative(self, e: Estimate) -> dict[str, float]:
        b = self.base
        return {"peak": e.memory.peak_bytes / b.memory.peak_bytes,
                "step_flops": (e.step.forward_flops + e.step.backward_flops)
                / max(1, b.step.forward_flops + b.step.backward_flops),
                "run_flops": e.run.total_flops / max(1, b.run.total_flops)}

    def to_json(self) -> list[dict]:
        return [e.to_json() | {"relative_to_first": self.relative(e)} for e in self.estimates]


    def differences(self) -> list[str]:
        """For each estimate whose method appears earlier under another implementation:
        what the implementations change, term by term."""
        lines = []
        for i, e in enumerate(self.estimates):
            other = next((o for o in self.estimates[:i] if o.scenario.method == e.scenario.method
                          and o.scenario.impl != e.scenario.impl), None)
            if other is None:
                continue
            terms = [f"{k} {(v - other.memory.breakdown_bytes.get(k, 0)) / 2**20:+.2f}"
                     for k, v in e.memory.breakdown_bytes.items()
                     if abs(v - other.memory.breakdown_bytes.get(k, 0)) >= 2**16]
            bwd = e.step.backward_flops - other.step.backward_flops
            fwd = e.step.forward_flops - other.step.forward_flops
            lines.append(
                f"{label(e)} against {label(other)}: step peak "
                f"{(e.memory.peak_bytes - other.memory.peak_bytes) / 2**20:+.2f} MiB "
                f"({', '.join(terms) or 'no term moves'}), whole-run peak "
                f"{(e.memory.run_peak_bytes - other.memory.run_peak_bytes) / 2**20:+.2f} MiB, "
                f"forward {fwd:+,} and backward {bwd:+,} FLOPs per step")
        return lines


def label(e: Estimate) -> str:
    return f"{e.scenario.method}@{e.scenario.impl}"


def parse_methods(text: str) -> list[str]:
    """'lightcl@lightcl, er' -> ['lightcl@lightcl', 'er'] (METHOD@IMPL names an implementation)."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise CostclError("--methods is empty; give a comma-separated list, e.g. sgd,er,lightcl "
                          "(METHOD@IMPL picks an implementation)")
    return names


def compare(s: Scenario, names: Sequence[str], convention: str = "runtime",
            flops_convention: str = "torch",
            progress: Callable[[str], None] | None = None, profile: Any = None) -> Comparison:
    """``profile``: the device's speeds for the time columns (default: the estimate's)."""
    methods.check_shared(s, names)
    out = []
    for name in names:
        if progress:
            progress(name)
        out.append(estimate(methods.named(s, name), convention, flops_convention,
                            profile=profile))
    return Comparison(tuple(out))
