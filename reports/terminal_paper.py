"""`costcl paper lightcl`: the table with three columns per cell, deviations shown."""
from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from reports.paper_table import DATASETS, Cell, published, savings


DATASET_NAMES = {"cifar10": "Split CIFAR-10", "tinyimagenet": "Split TinyImageNet"}
QUANTITY_NAMES = {"flops": "FLOPs", "mem": "Mem"}


def _fmt(v: float) -> str:
    return f"{v:,.1f}"


def _power(unit: float) -> str:
    """1e15 -> 10^15: the table's FLOPs unit, as people write it."""
    return f"10^{round(math.log10(unit))}"


def _differences(cells: list[Cell], console: Console) -> None:
    """Each differing cell on a line; a reason shared by the cells after it is said once."""
    groups: list[tuple[str, list[Cell]]] = []
    for c in cells:
        if c.reproduced:
            continue
        if groups and groups[-1][0] == c.reason:
            groups[-1][1].append(c)
        else:
            groups.append((c.reason, [c]))
    for reason, group in groups:
        for c in group:
            console.print(f"  {c.label}, {DATASET_NAMES[c.dataset]} {QUANTITY_NAMES[c.quantity]}: "
                          f"table {c.published:g}, costcl {c.paper:.2f} ({c.deviation:+.1f})")
        if reason:
            console.print(f"    [dim]{reason}[/dim]")


def paper_tables(cells: list[Cell], console: Console) -> None:
    data = published()
    console.print(f"[bold]The LightCL table beside costcl[/bold]\n[dim]{data['source']}[/dim]")
    for ds in DATASETS:
        unit = data["units"][ds]["flops"]
        t = Table(title=f"{DATASET_NAMES[ds]} (FLOPs in {_power(unit)}, Mem in MiB)",
                  header_style="bold")
        t.add_column("method", no_wrap=True, min_width=12)
        t.add_column("public\ncode", no_wrap=True)
        for q in ("FLOPs", "Mem"):
            for col in ("table", "paper", "runtime", "costcl's\nruntime"):
                t.add_column(f"{q}\n{col}", justify="right", no_wrap=True)
        rows: dict[str, dict[str, Cell]] = {}
        for c in cells:
            if c.dataset == ds:
                rows.setdefault(c.label, {})[c.quantity] = c
        for label, qs in rows.items():
            vals = []
            for q in ("flops", "mem"):
                c = qs[q]
                paper = _fmt(c.paper) if c.reproduced else f"[yellow]{_fmt(c.paper)}[/yellow]"
                vals += [_fmt(c.published), paper, _fmt(c.runtime), _fmt(c.runtime_costcl)]
            t.add_row(label, qs["mem"].impl if qs["mem"].impl != "costcl" else "-", *vals)
        console.print(t)
    core = [c for c in cells if c.method != "lightcl"]
    ok = sum(c.reproduced for c in core)
    console.print(f"Paper convention reproduces {ok} of the {len(core)} cells of the other methods "
                  "at the table's one decimal. Cells that differ (yellow):")
    _differences(cells, console)
    console.print("\nMemory saved by LightCL on Split TinyImageNet (times less than the other method):")
    st = Table(header_style="bold")
    for col in ("comparison", "table", "costcl paper", "runtime, public code",
                "runtime, costcl's step"):
        st.add_column(col, justify="left" if col == "comparison" else "right",
                      no_wrap=col == "comparison")
    for name, v in savings(cells).items():
        st.add_row(name, f"{v['published']:.2f}x", f"{v['paper']:.2f}x", f"{v['runtime']:.2f}x",
                   f"{v['runtime_costcl']:.2f}x")
    console.print(st)
    console.print("[dim]runtime: the default implementation, the public code costcl reproduces "
                  "(the 'public code' column; '-': none, costcl's step); costcl's runtime: "
                  "--impl costcl.[/dim]")
    claim = data["claims"]["memory_reduction"]
    console.print(f"[dim]The paper's claim: \"{claim['text']}\" ({claim['value']}x = "
                  "SparCL-DER++ / LightCL 0.9 on TinyImageNet).[/dim]")
