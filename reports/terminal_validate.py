"""`costcl validate`: predicted beside measured, with relative errors."""
from __future__ import annotations

from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from costmodel.estimation import Estimate
from reports.terminal import scenario_line
from reports.units import flops, mib


class ValidationLike(Protocol):
    """What the table reads from a validation (lightcl's Validation); reports do not import lightcl."""
    predicted: Estimate
    measured: dict[str, Any]
    compared_with: str
    compared_peak_bytes: int
    notes: list[str]

    @property
    def peak_error(self) -> float | None: ...

    @property
    def scratch_peak_error(self) -> float | None: ...


def _err(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.2f}%"


def validation_table(v: ValidationLike, console: Console) -> None:
    m, e = v.measured, v.predicted
    console.print(f"[bold]costcl validate[/bold] on {m['device']}")
    console.print(scenario_line(e))
    t = Table(header_style="bold")
    for col in ("quantity", "predicted", "measured", "error"):
        t.add_column(col, justify="left" if col == "quantity" else "right")
    if m.get("oom"):
        t.add_row("peak memory", f"{mib(v.compared_peak_bytes)} MiB",
                  f"[red]out of memory at batch {m['failed_batch']}[/red]", "-")
    else:
        label = "peak memory (as a tracker sees it)" if v.compared_with == "instrumented" else "peak memory"
        t.add_row(label, f"{mib(v.compared_peak_bytes)} MiB", f"{mib(m['peak_bytes'])} MiB",
                  _err(v.peak_error))
        if v.compared_with == "instrumented":
            t.add_row("peak memory, uninstrumented run", f"{mib(e.memory.peak_bytes)} MiB", "", "")
        if m.get("peak_with_scratch_bytes"):  # CPU plain run: what the allocator handed out
            want = e.memory.peak_with_scratch_bytes
            t.add_row("peak with kernel scratch", f"{mib(want)} MiB" if want else "-",
                      f"{mib(m['peak_with_scratch_bytes'])} MiB",
                      _err(v.scratch_peak_error))
        if m.get("reserved_bytes"):
            t.add_row("reserved by the CUDA allocator", "", f"{mib(m['reserved_bytes'])} MiB", "")
    t.add_row("forward FLOPs", flops(e.step.forward_flops), flops(m["forward_flops"]),
              _err((e.step.forward_flops - m["forward_flops"]) / max(m["forward_flops"], 1)))
    t.add_row("backward FLOPs", flops(e.step.backward_flops), flops(m["backward_flops"]),
              _err((e.step.backward_flops - m["backward_flops"]) / max(m["backward_flops"], 1)))
    predicted_s = e.time.step_s if e.time is not None else None
    if m.get("seconds_per_step") or predicted_s:
        got = m.get("seconds_per_step")
        t.add_row("seconds per step", f"{predicted_s:.3f}" if predicted_s else "",
                  f"{got:.3f}" if got else "",
                  _err((predicted_s - got) / got) if predicted_s and got else "-")
    console.print(t)
    if e.time is not None:
        from reports.terminal_time import profile_line
        console.print(f"[dim]{profile_line(e)}[/dim]")
    for note in v.notes:
        console.print(f"[dim]note: {note}[/dim]")
