"""Tables for `costcl convert`, `budget`, `fit`."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from reports.units import MIB, flops, mib


def conversion_text(c, console: Console) -> None:  # noqa: ANN001
    j = c.to_json()
    q = j["query"]
    console.print(f"[bold]{c.model}[/bold]: {c.backbone_params:,} backbone parameters = "
                  f"{mib(c.model_bytes)} MiB = [bold]{j['exemplars_per_model']:.2f}[/bold] "
                  f"{c.dataset} exemplars ({c.exemplar_bytes:,} bytes each, uint8)")
    if q["bytes"] != c.model_bytes:
        console.print(f"{mib(q['bytes'])} MiB = {q['exemplars']:,.2f} exemplars "
                      f"({q['whole_exemplars']:,} whole) = {q['models']:.3f} models")
    console.print("[dim]MEMO's counting: backbone parameters x 4 bytes (no head, no batch-norm "
                  "statistics); an exemplar as H x W x C bytes[/dim]")


def _methods_table(t, title: str) -> Table:  # noqa: ANN001
    tab = Table(title=title, header_style="bold")
    for col in ("method", "model\nMiB", "exemplars", "exemplars\nMiB", "per\nclass"):
        tab.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for name, m in t.methods.items():
        tab.add_row(name, mib(m.model_bytes), f"{m.exemplars:,}",
                    mib(m.exemplars * t.exemplar_bytes), f"{m.exemplars_per_class:,}")
    return tab


def budget_table(t, console: Console) -> None:  # noqa: ANN001
    console.print(_methods_table(t, f"MEMO fair protocol: {t.dataset}, {t.model}, {t.tasks} tasks "
                                    f"(init {t.init}, increment {t.increment}), budget "
                                    f"{t.budget_mib:.2f} MiB"))
    console.print("[dim]budget = DER's final footprint: T backbones + the benchmark buffer[/dim]")
    _uncosted(t, console)


def _uncosted(t, console: Console) -> None:  # noqa: ANN001
    if t.uncosted:
        console.print(f"[dim]{', '.join(t.uncosted)}: in MEMO's table, not in costcl's catalog "
                      "(`costcl methods`); their rows are MEMO's counting, no step is costed[/dim]")


def auc_table(tables, console: Console) -> None:  # noqa: ANN001
    t0 = tables[0]
    tab = Table(title=f"MEMO memory-agnostic points: {t0.dataset}, {t0.tasks} tasks "
                      f"(init {t0.init}, increment {t0.increment})", header_style="bold")
    for col in ("DER backbone", "budget MiB", "der-expand", "memo", "single-backbone"):
        tab.add_column(col, justify="left" if col == "DER backbone" else "right", no_wrap=True)
    for t in tables:
        m = t.methods
        tab.add_row(t.point, f"{t.budget_mib:.1f}", f"{m['der-expand'].exemplars:,}",
                    f"{m['memo'].exemplars:,}", f"{m['icarl'].exemplars:,}")
    console.print(tab)
    console.print(f"[dim]exemplars each method keeps; single-backbone methods (replay, icarl, wa, "
                  f"podnet, bic, foster) keep {t0.model}[/dim]")
    _uncosted(t0, console)


def equal_table(rows, budget_mib: float, counting: str, console: Console) -> None:  # noqa: ANN001
    tab = Table(title=f"A {budget_mib:g} MiB budget ({counting} counting)", header_style="bold")
    for col in ("method", "model\nMiB", "bytes per\nexemplar", "exemplars\nthat fit", ""):
        tab.add_column(col, justify="left" if col in ("method", "") else "right", no_wrap=True)
    for r in rows:
        if r.short_by_bytes:
            tab.add_row(r.method, mib(r.model_bytes), f"{r.exemplar_bytes:,}", "-",
                        f"[red]{r.short_by_bytes / MIB:.2f} MiB short[/red]")
        else:
            tab.add_row(r.method, mib(r.model_bytes), f"{r.exemplar_bytes:,}",
                        "no buffer" if r.exemplars is None else f"{r.exemplars:,}", "")
    console.print(tab)


def epochs_table(rows, budget: float, console: Console) -> None:  # noqa: ANN001
    tab = Table(title=f"A training budget of {budget:.3g} FLOPs", header_style="bold")
    for col in ("method", "FLOPs, 1 epoch a task", "epochs a task", "FLOPs spent"):
        tab.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for r in rows:
        tab.add_row(r.method, flops(r.flops_per_epoch), str(r.epochs), flops(r.total_flops))
    console.print(tab)


def fit_table(r, console: Console) -> None:  # noqa: ANN001
    d, s = r.device, r.scenario
    console.print(f"[bold]{d.name}[/bold]: {d.usable_mib:,} MiB usable of {d.total_mib:,} "
                  f"(runtime convention, {d.runs_on})")
    if r.largest_batch and r.peak_at_next is None:
        console.print(f"{s.method} on {s.model}: largest batch [bold]{r.largest_batch:,}[/bold], "
                      f"a task's every training image (peak {mib(r.peak_at_largest)} MiB)")
    elif r.largest_batch:
        console.print(f"{s.method} on {s.model}: largest batch [bold]{r.largest_batch:,}[/bold] "
                      f"(peak {mib(r.peak_at_largest)} MiB; batch {r.largest_batch + 1:,} needs "
                      f"{mib(r.peak_at_next)} MiB)")
    else:
        console.print(f"{s.method} on {s.model}: [red]not even a batch of 1 fits[/red] "
                      f"({mib(r.peak_at_next)} MiB needed)")
    if r.largest_buffer is not None:
        console.print(f"largest buffer at batch {min(s.batch_size, max(r.largest_batch, 1))}: "
                      f"[bold]{max(r.largest_buffer, 0):,}[/bold] exemplars")
    if r.methods:
        tab = Table(header_style="bold")
        for col in ("method", "batch", "buffer", "peak MiB", ""):
            tab.add_column(col, justify="left" if col in ("method", "") else "right")
        for m in r.methods:
            verdict = "fits" if m.fits else f"[red]{(m.peak_bytes - d.usable_bytes) / MIB:.1f} MiB short[/red]"
            tab.add_row(m.method, str(m.batch_size), f"{m.buffer_size:,}", mib(m.peak_bytes), verdict)
        console.print(tab)
    if r.time_budget_s is not None:
        time_budget_table(r.time, r.time_budget_s, r.time_profile, console)


def time_budget_table(rows, budget_s: float, profile: str | None, console: Console) -> None:  # noqa: ANN001
    """Each method's step and run time, and the epochs a task that fit in the budget."""
    from reports.terminal_time import duration

    tab = Table(title=f"A time budget of {duration(budget_s)}"
                + (f" on {profile}" if profile else ""), header_style="bold")
    for col in ("method", "step", "1 epoch\na task", "epochs\nthat fit", "run at\nthose",
                "as given", ""):
        tab.add_column(col, justify="left" if col in ("method", "") else "right", no_wrap=True)
    for r in rows:
        verdict = "fits" if r.fits else "[red]over[/red]"
        tab.add_row(r.method, duration(r.step_s), duration(r.run_h_per_epoch * 3600),
                    f"{r.epochs:,}", duration(r.run_h * 3600),
                    f"{r.scenario_epochs}: {duration(r.scenario_run_h * 3600)}", verdict)
    console.print(tab)
