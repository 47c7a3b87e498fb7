"""The typer app and what its commands share: output formats, progress bars.

Command modules (``cli/cost_commands.py``, ``cli/budget_commands.py``,
``cli/train_commands.py``) register on :data:`app`; ``cli/main.py`` imports them
in the order ``costcl --help`` lists them and holds the entry point.
"""
from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="costcl",
    help="What a continual-learning method costs on an edge device: predicted, then measured.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()

Convention = Annotated[str, typer.Option(help="runtime (what PyTorch allocates) or paper (the LightCL table's accounting).")]
FlopsConvention = Annotated[str, typer.Option(help="torch (FLOPs, FlopCounterMode), fvcore or thop (MACs).")]
def _both(ctx: typer.Context, as_json: object, fmt: object) -> None:
    """--json and --format csv contradict each other: refuse before any work."""
    if as_json is True and fmt not in (None, "table", "json"):
        from costmodel.errors import CostclError
        raise CostclError(f"--json and --format {fmt} ask for two formats; give one")


def _as_json(ctx: typer.Context, value: bool) -> bool:
    _both(ctx, value, ctx.params.get("format"))
    return value


def _format(ctx: typer.Context, value: str) -> str:
    """Checked while the command line is parsed, so a bad --format fails before any work."""
    from reports.formats import check_format

    _both(ctx, ctx.params.get("as_json"), value)
    return check_format(value)


AsJson = Annotated[bool, typer.Option("--json", callback=_as_json,
                                      help="Print JSON instead of tables (= --format json).")]
Format = Annotated[str, typer.Option("--format", callback=_format,
                                     help="table, json or csv (one row per method or layer).")]


def _threads(value: int | None) -> int | None:
    """Checked while the command line is parsed; :func:`use_threads` applies it."""
    if value is not None and value < 1:
        from costmodel.errors import CostclError
        raise CostclError(f"--threads {value}: give 1 or more CPU threads")
    return value


Threads = Annotated[Optional[int], typer.Option(
    "--threads", callback=_threads,
    help="CPU threads torch runs with (default: torch's, one per core); oneDNN keeps some "
         "buffers per thread, so the peak with kernel scratch is for this many.")]


def use_threads(threads: int | None) -> None:
    """Run torch's CPU ops on ``threads`` threads (``None``: as they are)."""
    if threads is not None:
        import torch
        torch.set_num_threads(threads)


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def emit(fmt: str, as_json: bool, obj: object, rows, table) -> None:  # noqa: ANN001
    """Print ``obj`` as JSON, its ``rows()`` as CSV, or call ``table()`` (``fmt`` is checked)."""
    from reports.formats import write_csv

    fmt = "json" if as_json else fmt
    if fmt == "json":
        emit_json(obj)
    elif fmt == "csv":
        write_csv(rows())
    else:
        table()


def _progress(total: int, what: str):  # noqa: ANN202
    """A transient progress bar on stderr (nothing when stderr is not a terminal)."""
    import contextlib

    from rich.progress import Progress

    @contextlib.contextmanager
    def bar():  # noqa: ANN202
        err = Console(stderr=True)
        with Progress(console=err, transient=True, disable=not err.is_terminal) as p:
            task = p.add_task(what, total=total)

            def advance(name: str, step: int = 1) -> None:
                """One more done (``step`` 0: only say what is under way)."""
                p.update(task, advance=step, description=f"{what} {name}".strip())
            yield advance
    return bar()


class CostclInterrupt(Exception):
    """Ctrl-C during training: a message, exit status 130."""
