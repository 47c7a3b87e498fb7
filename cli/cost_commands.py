"""Costing commands: estimate, compare, paper, report, crosscheck and the listings."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli.app import (AsJson, Convention, FlopsConvention, Format, Threads, _progress, app,
                     console, emit, emit_json, use_threads)
from cli.options import DeviceProfileFile, scenario_options, time_profile


@app.command()
@scenario_options
def estimate(scenario, convention: Convention = "runtime",  # noqa: ANN001
             flops_convention: FlopsConvention = "torch",
             layers: Annotated[bool, typer.Option(help="Also print the per-layer table (CSV: one row per layer).")] = False,
             as_json: AsJson = False, format: Format = "table",
             no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the trace and answer cache (also: COSTCL_NO_CACHE=1).")] = False,
             device_profile: DeviceProfileFile = None, threads: Threads = None) -> None:
    """Predict the FLOPs and peak memory of one step and of the whole CL run."""
    import contextlib
    import io
    import sys

    from cli.cache_commands import remember
    from costmodel import cache
    from costmodel.estimation import estimate as run_estimate
    from reports.formats import estimate_rows, layer_rows
    from reports.terminal import estimate_table

    speeds = time_profile(device_profile)
    use_threads(threads)
    with cache.disabled(no_cache):
        e = run_estimate(scenario, convention=convention, flops_convention=flops_convention,
                         layers=layers, profile=speeds)
        d = e.to_json()
        # Rendered to text first, then printed: the text is what a repeated command prints
        # from the answer cache, byte for byte (cli/cache_commands.py).
        if ("json" if as_json else format) == "table":
            with console.capture() as captured:
                estimate_table(e, console, layers=layers)
            text = captured.get()
        else:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                emit(format, as_json, d, lambda: layer_rows(d) if layers else estimate_rows(d),
                     lambda: None)
            text = buf.getvalue()
        sys.stdout.write(text)
        sys.stdout.flush()
        remember(text, e.scenario.model, e.scenario.method)


@app.command()
@scenario_options
def compare(scenario,  # noqa: ANN001
            methods_: Annotated[str, typer.Option("--methods", help="Comma-separated methods; the first is the reference.")] = "sgd,er,derpp,lightcl",
            convention: Convention = "runtime", flops_convention: FlopsConvention = "torch",
            as_json: AsJson = False, format: Format = "table",
            device_profile: DeviceProfileFile = None) -> None:
    """One scenario, several methods: step and run FLOPs, peak memory and its breakdown."""
    from reports.compare import compare as run_compare
    from reports.compare import parse_methods
    from reports.formats import compare_rows
    from reports.terminal import compare_table

    names = parse_methods(methods_)
    with _progress(len(names), "costing") as advance:
        result = run_compare(scenario, names, convention, flops_convention, progress=advance,
                             profile=time_profile(device_profile))
    d = result.to_json()
    emit(format, as_json, d, lambda: compare_rows(d), lambda: compare_table(result, console))


@app.command()
def paper(table: Annotated[str, typer.Argument(help="Which published table: lightcl.")],
          as_json: AsJson = False) -> None:
    """A paper's table beside costcl's paper and runtime conventions (deviations shown)."""
    if table != "lightcl":
        from costmodel.errors import suggest
        raise suggest(table, ["lightcl"], "paper table")
    from reports.paper_table import cells, published, to_json
    from reports.terminal_paper import paper_tables

    with _progress(len(published()["rows"]) * 2, "costing the LightCL table") as advance:
        result = cells(progress=lambda: advance(""))
    if as_json:
        emit_json(to_json(result))
    else:
        paper_tables(result, console)


@app.command()
@scenario_options
def report(scenario,  # noqa: ANN001
           out: Annotated[str, typer.Option(help="Folder for index.html, report.md and the charts.")] = "report",
           methods_: Annotated[str, typer.Option("--methods", help="Methods to compare.")] = "sgd,er,derpp,lightcl",
           validation: Annotated[Optional[str], typer.Option(help="Folder of validation JSON results (costcl validate --json).")] = None,
           sweep: Annotated[Optional[str], typer.Option(help="A `costcl sweep run` folder: draw that sweep instead (predicted against measured; accuracy against memory).")] = None) -> None:
    """Charts and tables for people: memory, FLOPs, budgets, the LightCL table, validation, layers."""
    if sweep is not None:
        from cli.sweep_commands import report_sweep
        return report_sweep(sweep, out, validation)
    from pathlib import Path

    from budgets.curves import batch_curves, budget_grid_mib, exemplar_curves
    from budgets.devices import DEVICES
    from reports.compare import parse_methods
    from reports.report import Sweeps, build, check_out, load_validations, progress_steps

    names = parse_methods(methods_)
    target = check_out(out)  # before any work: a bad folder fails in a second
    validations = load_validations(Path(validation)) if validation else None
    # one tick to start, a batch and a budget sweep per method, then build()'s ticks
    with _progress(1 + 2 * len(names) + progress_steps(), "report:") as advance:
        batches, exemplars, skipped = {}, {}, []
        for name in names:
            advance(f"peak memory as the batch grows ({name})")
            batches |= batch_curves(scenario, [name]).points
        grid = budget_grid_mib()
        for name in names:
            advance(f"exemplars as the budget grows ({name})")
            curves = exemplar_curves(scenario, [name], grid)
            exemplars |= curves.points
            skipped += curves.skipped
        advance("costing each method")
        sweeps = Sweeps(exemplars, skipped, batches,
                        [(d.name, d.usable_mib) for d in DEVICES.values()])
        sections = build(scenario, names, target, sweeps, validations, progress=advance)
    console.print(f"wrote {target / 'index.html'}, {target / 'report.md'} and "
                  f"{sum(1 for x in sections if x.image)} charts")


@app.command()
def models() -> None:
    """List the built-in model names (and how to name any other)."""
    from costmodel.models.registry import MODELS
    from reports.listing import listing

    rows = [(m.name, m.description) for m in MODELS.values()]
    rows += [("torchvision:NAME", "any torchvision classification model"),
             ("package.module:callable", "your own factory (given num_classes= if it takes it)")]
    listing(console, ("model", "what"), rows)


@app.command()
def datasets() -> None:
    """List the datasets: shape, classes, training images, default tasks and epochs."""
    from costmodel.datasets import DATASETS
    from reports.listing import listing

    listing(console, ("dataset", "C x H x W", "classes", "train images", "tasks", "epochs"),
            [(d.name, "x".join(map(str, d.input_shape)), str(d.classes), f"{d.train_images:,}",
              str(d.tasks), str(d.epochs)) for d in DATASETS.values()])


@app.command()
def methods() -> None:
    """List the CL methods costcl can cost (the catalog's and those installed packages
    register), their implementations and the default."""
    from costmodel.methods import method_rows
    from reports.listing import listing

    listing(console, ("method", "implementations (--impl)", "what it does (source)"),
            method_rows())


@app.command()
def crosscheck(
    model: Annotated[str, typer.Option(help="Model name (see `costcl models`).")] = "resnet18-cifar",
    dataset: Annotated[str, typer.Option(help="Dataset (sets the input size and classes).")] = "cifar10",
    input_size: Annotated[Optional[str], typer.Option(help="C,H,W; overrides the dataset's.")] = None,
    as_json: AsJson = False,
) -> None:
    """Forward counts of fvcore, thop and FlopCounterMode beside costcl's, per op type."""
    from costmodel.scenario import Scenario, parse_input_size
    from lightcl.crosscheck import crosscheck as run_crosscheck
    from reports.terminal_crosscheck import crosscheck_table

    size = parse_input_size(input_size) if input_size else None
    result = run_crosscheck(Scenario(model=model, dataset=dataset, input_size=size))
    if as_json:
        emit_json(result.to_json())
    else:
        crosscheck_table(result, console)
