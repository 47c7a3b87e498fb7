"""`costcl train` and `costcl generalizability` summaries."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def train_table(result, console: Console, folder: Path) -> None:  # noqa: ANN001
    s = result.scenario
    console.print(f"[bold]costcl train[/bold]: {s.method} on {s.model}, {s.dataset}, {s.tasks} tasks, "
                  f"{result.device}")
    t = Table(header_style="bold")
    for col in ("after task", "CIL", "TIL", "loss", "images/s", "seconds"):
        t.add_column(col, justify="right")
    for r in result.tasks:
        t.add_row(str(r.task + 1), f"{100 * r.cil_mean:.2f}", f"{100 * r.til_mean:.2f}",
                  f"{r.loss:.3f}", f"{r.images_per_s:.0f}", f"{r.seconds:.1f}")
    console.print(t)
    console.print(f"[dim]CIL/TIL: accuracy (%) averaged over the tasks seen; checkpoint and "
                  f"results.json in {folder}[/dim]")


def generalizability_table(g, console: Console) -> None:  # noqa: ANN001
    console.print(f"[bold]costcl generalizability[/bold]: after two tasks of fine-tuning, "
                  f"{g.metric.upper()} accuracy old {100 * g.old_accuracy:.1f}%, new "
                  f"{100 * g.new_accuracy:.1f}%")
    t = Table(header_style="bold")
    for col in ("layer", "params", "MS", "LP", "generalizes"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for s in g.layers:
        t.add_row(s.layer, f"{s.params:,}", f"{100 * s.ms:+.1f}", f"{100 * s.lp:+.1f}",
                  "yes" if s.generalizes else "no")
    console.print(t)
    point = g.suggested_train_from
    console.print(f"MS: old-task accuracy gained by restoring the layer's old weights; LP: new-task "
                  f"accuracy gained (points). Suggested freeze point: "
                  f"{'--train-from ' + point if point else 'none (every layer generalizes)'}")
