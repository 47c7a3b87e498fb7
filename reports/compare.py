"""One scenario, several methods: rows for `costcl compare`, relative to the first."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from costmodel import Scenario
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


def parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise CostclError("--methods is empty; give a comma-separated list, e.g. sgd,er,lightcl")
    return names


def compare(s: Scenario, names: Sequence[str], convention: str = "runtime",
            flops_convention: str = "torch",
            progress: Callable[[str], None] | None = None) -> Comparison:
    out = []
    for name in names:
        if progress:
            progress(name)
        out.append(estimate(s.replace(method=name), convention, flops_convention))
    return Comparison(tuple(out))
