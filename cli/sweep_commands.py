"""``costcl sweep plan|run``, and ``costcl report --sweep``'s entry.

Each command parses, calls the sweep library (:mod:`cli.sweep`) and prints.  Every
check that can fail on input (the file, each point's scenario and job, ``--out``,
the Ray cluster's nodes) runs before the first point, so bad input is one line and
exit 2 with nothing written.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.app import AsJson, CostclInterrupt, _progress, app, console, emit_json
from costmodel.errors import CostclError

sweep_app = typer.Typer(help="Many points of estimate, validate or train: planned, then run on "
                             "Ray or in this process.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")

SweepFile = Annotated[Path, typer.Argument(help="The sweep file (TOML): its base, axes and job tables.",
                                           show_default=False)]


def _plan(file: Path):  # noqa: ANN202
    from cli.sweep import plan
    from cli.sweep_file import load

    sweep = load(file)
    with _progress(len(sweep.points()), "planning") as advance:
        return plan(sweep, progress=advance, tracing=lambda name: advance(name, 0))


@sweep_app.command("plan")
def plan_command(file: SweepFile, as_json: AsJson = False) -> None:
    """List the points and their predicted memory and FLOPs; mark those that cannot fit."""
    from reports.sweep_terminal import plan_table

    planned = _plan(file)
    rows = [p.to_json() for p in planned]
    if as_json:
        emit_json({"sweep": str(file), "points": rows,
                   "refused": sum(1 for p in planned if p.refused)})
    else:
        plan_table(rows, console)


@sweep_app.command("run")
def run_command(
        file: SweepFile,
        out: Annotated[str, typer.Option(help="Folder for results.jsonl (a rerun continues it).",
                                         show_default=False)],
        address: Annotated[Optional[str], typer.Option(help="A Ray cluster to join, e.g. ray://head:10001 or auto (default: start Ray on this machine).")] = None,
        in_process: Annotated[bool, typer.Option("--in-process", help="Run the points one after another in this process, without Ray.")] = False,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run the points that failed last time again.")] = False) -> None:
    """Run every point not yet in --out: as Ray tasks, or in this process without Ray."""
    from cli import sweep_ray
    from cli.sweep import InProcess, run
    from cli.sweep_store import check_out

    folder = check_out(out)
    if in_process and address:
        raise CostclError("--in-process and --address ask for two places to run; give one")
    if address and not sweep_ray.installed():
        raise CostclError("--address needs Ray: pip install 'costcl[ray]'")
    planned = _plan(file)
    if in_process or not sweep_ray.installed():
        engine = InProcess()
        if not in_process:
            print("costcl: note: Ray is not installed (pip install 'costcl[ray]'); the points "
                  "run one after another in this process", file=sys.stderr)
    else:
        engine = sweep_ray.RayEngine(address)
        engine.prepare(planned)
    runnable = sum(1 for p in planned if p.refused is None)
    with _progress(runnable, "sweep") as advance:
        try:
            summary = run(planned, folder, engine, retry_failed, progress=advance)
        except KeyboardInterrupt:
            from reports.sweep_results import RESULTS, read

            done = read(folder / RESULTS).lines.keys() & {p.key for p in planned}
            raise CostclInterrupt(f"interrupted; {len(done)} of {runnable} points are in "
                                  f"{folder / RESULTS}: rerun the same command to go on") from None
    for p in summary.refused:
        console.print(f"refused point {p.point.index + 1} ({p.point.label}): {p.refused}")
    parts = [f"{summary.ok} ran ({engine.name})", f"{summary.failed} failed",
             f"{summary.already} were done before", f"{len(summary.refused)} refused"]
    console.print(f"sweep: {summary.points} points: {', '.join(parts)}; "
                  f"results in {folder / 'results.jsonl'}")
    if summary.foreign:
        console.print(f"({summary.foreign} lines there are points of another sweep file; kept)",
                      style="dim")


def report_sweep(folder: str, out: str, validation: str | None = None) -> None:
    """``costcl report --sweep DIR``: the sweep's charts and tables, in --out."""
    from reports.sweep_report import PROGRESS_STEPS, build, check_out, load

    if validation is not None:
        raise CostclError("--sweep draws a sweep's own results; leave out --validation (a "
                          "validate sweep's results are drawn as validations)")
    target = check_out(out)  # before any work
    results = load(folder)
    with _progress(PROGRESS_STEPS, "sweep report:") as advance:
        sections = build(results, Path(folder), target, progress=advance)
    console.print(f"wrote {target / 'index.html'}, {target / 'report.md'} and "
                  f"{sum(1 for x in sections if x.image)} charts")
