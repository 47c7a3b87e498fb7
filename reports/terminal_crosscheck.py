"""The crosscheck table: each tool's count beside costcl's in that tool's convention."""
from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.table import Table

from costmodel.conventions import TOOL_UNITS


class CrossCheckLike(Protocol):
    """What the table reads from a crosscheck (lightcl's CrossCheck); reports do not import lightcl."""
    model: str
    input_shape: tuple[int, ...]
    measured: dict[str, dict[str, int]]
    costcl: dict[str, dict[str, int]]
    notes: list[str]


def crosscheck_table(c: CrossCheckLike, console: Console) -> None:
    console.print(f"[bold]costcl crosscheck[/bold]: {c.model}, one forward of 1x"
                  f"{'x'.join(map(str, c.input_shape))}, training mode")
    t = Table(header_style="bold")
    for col, justify in (("tool", "left"), ("op", "left"), ("tool's count", "right"),
                         ("costcl", "right"), ("", "left")):
        t.add_column(col, justify=justify)
    for tool, unit in TOOL_UNITS.items():
        measured, mine = c.measured[tool], c.costcl[tool]
        for cat in sorted(set(measured) | set(mine)):
            got, ours = measured.get(cat), mine.get(cat)
            mark = "[green]=[/green]" if got == ours else "[yellow]differs[/yellow]"
            t.add_row(f"{tool} ({unit})", cat, "-" if got is None else f"{got:,}",
                      "-" if ours is None else f"{ours:,}", mark)
        t.add_row("", "[bold]total[/bold]", f"{sum(measured.values()):,}", f"{sum(mine.values()):,}",
                  "", end_section=True)
    console.print(t)
    for note in c.notes:
        console.print(f"[dim]- {note}[/dim]")
