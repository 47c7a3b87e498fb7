"""``costcl sweep plan``'s table: each point, its prediction, what it asks for, and
whether it can run at all.  Reads the points' JSON (``PlannedPoint.to_json()``), so the
table and ``--json`` cannot disagree."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from reports.sweep_results import point_label
from reports.units import mib, si


def plan_table(rows: list[dict[str, Any]], console: Console) -> None:
    refused = sum(1 for r in rows if r["refused"])
    kind = rows[0]["job"]["kind"] if rows else "-"
    t = Table(title=f"costcl sweep plan: {len(rows)} points, {kind} job"
                    + (f", {refused} refused" if refused else ""), header_style="bold")
    for name, justify in (("#", "right"), ("point", "left"), ("runs", "left"),
                          ("step MiB", "right"), ("run MiB", "right"), ("step FLOPs", "right"),
                          ("run FLOPs", "right"), ("asks for", "left"), ("fits", "left")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        s, p, res = r["scenario"], r["predicted"], r["resources"]
        gpu = f" {res['gpus']:g} GPU" if res["gpus"] else ""
        t.add_row(str(r["index"]), point_label(r["coordinates"]), f"{s['method']}@{s['impl']} {s['device']}",
                  mib(p["peak_bytes"]), mib(p["run_peak_bytes"]), si(p["step_flops"]),
                  si(p["run_flops"]), f"{res['cpus']} CPU{gpu} {res['memory_bytes'] / 2**30:.1f}G",
                  f"[red]no: {r['refused']}[/red]" if r["refused"] else "yes")
    console.print(t)
    console.print("step and run MiB: the peak of a step and of the whole run (evaluation "
                  "included); FLOPs: a step's and the whole run's; asks for: what a point "
                  "reserves on Ray. Predicted time: none yet (costcl has no time model).",
                  style="dim")
