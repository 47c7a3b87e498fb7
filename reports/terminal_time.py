"""The time block in the terminal: seconds per step, hours per run, where the step goes."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from costmodel.estimation import Estimate


def duration(seconds: float) -> str:
    """3.2 ms, 0.412 s, 12.5 min, 3.1 h, 2.4 d: the unit a person reads at a glance."""
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 86400:.1f} d"


def profile_line(e: Estimate) -> str:
    t = e.time
    assert t is not None
    state = "calibrated" if t.calibrated else "[yellow]uncalibrated[/yellow]"
    return f"device profile {t.profile} ({state}): {t.profile_source}"


def time_table(e: Estimate, console: Console) -> None:
    t = e.time
    if t is None:
        return
    tab = Table(title=f"Time: {duration(t.step_s)} a step, {duration(t.run_h * 3600)} the run",
                header_style="bold")
    tab.add_column("quantity")
    tab.add_column("value", justify="right")
    tab.add_row("one step", duration(t.step_s))
    tab.add_row("  forward", duration(t.forward_s))
    tab.add_row("  backward", duration(t.backward_s))
    tab.add_row("  optimizer", duration(t.optimizer_s))
    tab.add_row(f"whole run: {e.run.steps:,} steps and the work between", duration(t.run_train_s))
    tab.add_row("  evaluation after each task", duration(t.evaluation_s))
    tab.add_row("[bold]whole run[/bold]", f"[bold]{t.run_h:.3g} h[/bold]")
    console.print(tab)
    shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in
                       sorted(t.share.items(), key=lambda kv: -kv[1]) if v >= 0.005)
    console.print(f"The step's time: {shares}.")
    console.print(f"[dim]{profile_line(e)}[/dim]")


def calibration_table(profile, console: Console) -> None:  # noqa: ANN001
    """The measured rates a person checks at a glance: GFLOP/s, GB/s, microseconds."""
    tab = Table(title=f"Device profile {profile.name}", header_style="bold")
    for col in ("class", "rate", "fixed per op"):
        tab.add_column(col, justify="left" if col == "class" else "right")
    for key, r in profile.rates.items():
        if key.startswith(("conv", "linear")):
            rate = f"{r.per_s / 1e9:.1f} GFLOP/s" if r.per_s else "-"
        elif key.startswith("optimizer"):
            rate = f"{r.per_s / 1e6:.0f} M elements/s" if r.per_s else "-"
        else:
            rate = f"{r.per_s / 1e9:.2f} GB/s" if r.per_s else "-"
        tab.add_row(key, rate, f"{r.fixed_s * 1e6:.1f} us")
    console.print(tab)
    if profile.step_scale_source:
        console.print(f"fitted to real steps: fixed costs x {profile.fixed_scale:.3f}, FLOP and "
                      f"byte terms x {profile.step_scale:.3f} ({profile.step_scale_source})")
    console.print(f"[dim]{profile.source}[/dim]")


def compare_time_table(estimates, console: Console) -> None:  # noqa: ANN001
    """Step and run time per method, relative to the first, and where each step goes."""
    timed = [e for e in estimates if e.time is not None]
    if not timed:
        return
    from reports.compare import label

    base = timed[0].time
    state = "calibrated" if base.calibrated else "uncalibrated"
    tab = Table(title=f"Time on {base.profile} ({state})", header_style="bold")
    for col in ("method@impl", "step", "run", "step x", "largest shares"):
        tab.add_column(col, justify="left" if col in ("method@impl", "largest shares") else "right",
                       no_wrap=col != "largest shares")
    for e in timed:
        t = e.time
        top = sorted(t.share.items(), key=lambda kv: -kv[1])[:3]
        tab.add_row(label(e), duration(t.step_s), duration(t.run_h * 3600),
                    f"{t.step_s / base.step_s:.2f}" if base.step_s else "-",
                    ", ".join(f"{k} {100 * v:.0f}%" for k, v in top))
    console.print(tab)
