"""`costcl estimate --layers`: the per-layer table, readable in an 80-column terminal.

Why its own layout: eight columns of ``1.774e+09`` and ``15x512x4x4`` need about
130 columns, and rich, given 80 (a laptop terminal, or any pipe: rich falls back
to 80 there), shortens every cell to ``1.774e…``, which hides the very numbers the
table is for.  So numbers are printed short with an SI prefix (``1.77G``), the
layer name folds onto a second line rather than being cut, and when even that does
not fit, the type and output-shape columns give way (``--format csv`` has every
column, exact).  No cell is ever cut short.
"""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from costmodel.conventions import TOOL_UNITS
from costmodel.estimation import Estimate
from costmodel.layers import LayerCost
from reports.units import mib, si

SHOWN_GROUPED = 6
"""How many grouped convolutions the note names before "and N more"."""


def _table(e: Estimate, wide: bool, name_width: int | None = None) -> Table:
    """Wide: every column.  Narrow: no type and output shape, names broken at dots."""
    unit = TOOL_UNITS[e.flops_convention]
    t = Table(title="Per layer (forward order)", header_style="bold", box=box.SIMPLE_HEAD,
              pad_edge=False, collapse_padding=True, show_edge=False, title_justify="left")
    t.add_column("layer", overflow="fold")
    if wide:
        t.add_column("type", no_wrap=True)
    t.add_column("params", justify="right", no_wrap=True)
    if wide:
        t.add_column("output", no_wrap=True)
    for col in (f"fwd\n{unit}", f"bwd in\n{unit}", f"bwd w\n{unit}", "kept\nMiB"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("trains", no_wrap=True)
    for row in e.layers or ():
        name = row.name if name_width is None else _break(row.name, name_width)
        cells = [name, row.type] if wide else [name]
        cells.append(si(row.params))
        if wide:
            cells.append("x".join(map(str, row.output_shape)))
        cells += [si(row.forward_flops), si(row.backward_input_flops),
                  si(row.backward_weight_flops), mib(row.saved_bytes),
                  "frozen" if row.frozen else "yes"]
        t.add_row(*cells, style="dim" if row.frozen else None)
    return t


def _break(name: str, width: int) -> str:
    """A long dotted name on several lines, broken after a dot (rich would cut mid-word),
    the later lines indented so they read as one name."""
    if len(name) <= width:
        return name
    lines, line = [], ""
    parts = name.split(".")
    for i, part in enumerate(parts):
        piece = part + ("." if i < len(parts) - 1 else "")
        if line.strip() and len(line) + len(piece) > width:
            lines.append(line)
            line = "  "
        line += piece
    return "\n".join(lines + [line])


def _width(console: Console, table: Table) -> int:
    """The table's natural width: no cell folded."""
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def grouped_note(layers: tuple[LayerCost, ...] | list[LayerCost], unit: str = "FLOPs") -> str | None:
    """Which layers' backward holds FlopCounterMode's grouped-convolution excess, and how much.

    The excess is why EfficientNet's backward is ~40x its forward: a depthwise
    conv's weight gradient is counted ``groups`` times its forward cost, though
    the arithmetic it needs is about its forward cost.
    """
    grouped = [r for r in layers if r.grouped_weight_grad_excess_flops]
    if not grouped:
        return None
    grouped.sort(key=lambda r: -r.grouped_weight_grad_excess_flops)
    named = ", ".join(f"{r.name} ({r.backward_weight_flops / r.forward_flops:.0f}x)"
                      if r.forward_flops else r.name for r in grouped[:SHOWN_GROUPED])
    more = len(grouped) - SHOWN_GROUPED
    excess = sum(r.grouped_weight_grad_excess_flops for r in grouped)
    return (f"grouped convolutions: the weight gradient of {len(grouped)} "
            f"layer{'s' if len(grouped) > 1 else ''} is counted as FlopCounterMode counts it, "
            f"groups times the layer's forward (the factor in brackets): {named}"
            + (f" and {more} more" if more > 0 else "")
            + f"; {si(excess)} {unit} of 'bwd w' come from that rule alone")


def layer_table(e: Estimate, console: Console) -> None:
    """The wide table if the console has room, else the narrow one; then its legend."""
    table = _table(e, wide=True)
    if _width(console, table) > console.width:
        longest = max((len(r.name) for r in e.layers or ()), default=5)
        others = _width(console, _table(e, wide=False)) - longest
        table = _table(e, wide=False, name_width=max(12, console.width - others))
    console.print(table)
    console.print("[dim]frozen: no parameter of the layer trains and no gradient flows through it. "
                  "k, M, G: 10^3, 10^6, 10^9. bwd in / bwd w: the gradient of the input / the "
                  "weights. kept: activations kept for backward. --format csv: every column, "
                  "exact.[/dim]")
    note = grouped_note(e.layers or (), TOOL_UNITS[e.flops_convention])
    if note:
        console.print(f"note: {note}")
