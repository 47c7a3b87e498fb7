"""The ``costcl`` command.  Each command parses, calls one library function, prints.

Bad input anywhere is a :class:`~costmodel.errors.CostclError`; :func:`run`
prints it as one line on stderr and exits with status 2, as it does for
click's own usage errors.  Heavy imports happen inside the commands, so
``costcl --help`` stays fast.
"""
from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

from cli.options import scenario_options
from costmodel.errors import CostclError

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
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@app.command()
@scenario_options
def estimate(scenario, convention: Convention = "runtime",  # noqa: ANN001
             flops_convention: FlopsConvention = "torch",
             layers: Annotated[bool, typer.Option(help="Also print the per-layer table.")] = False,
             as_json: AsJson = False) -> None:
    """Predict the FLOPs and peak memory of one step and of the whole CL run."""
    from costmodel.estimation import estimate as run_estimate
    from reports.terminal import estimate_table

    e = run_estimate(scenario, convention=convention, flops_convention=flops_convention,
                     layers=layers)
    if as_json:
        emit_json(e.to_json())
    else:
        estimate_table(e, console, layers=layers)


@app.command()
@scenario_options
def compare(scenario,  # noqa: ANN001
            methods_: Annotated[str, typer.Option("--methods", help="Comma-separated methods; the first is the reference.")] = "sgd,er,derpp,lightcl",
            convention: Convention = "runtime", flops_convention: FlopsConvention = "torch",
            as_json: AsJson = False) -> None:
    """One scenario, several methods: step and run FLOPs, peak memory and its breakdown."""
    from reports.compare import compare as run_compare
    from reports.compare import parse_methods
    from reports.terminal import compare_table

    names = parse_methods(methods_)
    with _progress(len(names), "costing") as advance:
        result = run_compare(scenario, names, convention, flops_convention, progress=advance)
    if as_json:
        emit_json(result.to_json())
    else:
        compare_table(result, console)


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


def _progress(total: int, what: str):  # noqa: ANN202
    """A transient progress bar on stderr (nothing when stderr is not a terminal)."""
    import contextlib

    from rich.progress import Progress

    @contextlib.contextmanager
    def bar():  # noqa: ANN202
        err = Console(stderr=True)
        with Progress(console=err, transient=True, disable=not err.is_terminal) as p:
            task = p.add_task(what, total=total)
            yield lambda name: p.update(task, advance=1, description=f"{what} {name}".strip())
    return bar()


@app.command()
@scenario_options
def validate(scenario,  # noqa: ANN001
             steps: Annotated[int, typer.Option(help="Steps timed after the two measured ones.")] = 3,
             fake: Annotated[bool, typer.Option(help="Measure CPU memory on fake tensors (same bytes, no compute).")] = False,
             as_json: AsJson = False) -> None:
    """Run the method's real steps; measured peak memory, FLOPs and time beside costcl's prediction."""
    from lightcl.validate import validate as run_validate
    from reports.terminal_validate import validation_table

    with _progress(5, "validating") as advance:
        result = run_validate(scenario, scenario.device, steps=steps, fake=fake, progress=advance)
    if as_json:
        emit_json(result.to_json())
    else:
        validation_table(result, console)


@app.command()
@scenario_options
def train(scenario,  # noqa: ANN001
          data_root: Annotated[str, typer.Option(help="Data folder (CIFAR pickles or an ImageFolder tree), or 'synthetic'.")] = "synthetic",
          out: Annotated[Optional[str], typer.Option(help="Folder for the checkpoint and results.json.")] = None,
          resume: Annotated[bool, typer.Option(help="Continue from the last finished task in --out.")] = False,
          checkpoint: Annotated[Optional[str], typer.Option(help="Initial weights (a state dict, loaded with weights_only=True).")] = None,
          seed: Annotated[int, typer.Option(help="Seed of initialisation and shuffling.")] = 0,
          as_json: AsJson = False) -> None:
    """Train a whole CL run with the bundled trainer: accuracy after each task, checkpoints, results."""
    from pathlib import Path

    from costmodel import methods as method_catalog
    from lightcl.data import load
    from lightcl.trainer import Trainer
    from reports.terminal_train import train_table

    if scenario.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CostclError("--device cuda, but no CUDA device is visible; use --device cpu")
    s = method_catalog.resolve(scenario)
    folder = Path(out) if out else Path("out") / f"{s.method}-{s.dataset}"
    data = load(s, data_root)
    total = sum(p.epochs * p.tasks for p in method_catalog.get(s.method).schedule(s))
    with _train_progress(total) as report:
        trainer = Trainer(s, data, s.device, folder, checkpoint, seed, progress=report)
        try:
            result = trainer.run(resume=resume)
        except KeyboardInterrupt:
            raise CostclInterrupt(f"interrupted; the last finished task is saved in {folder}: "
                                  "rerun with --resume") from None
    if as_json:
        emit_json(result.to_json())
    else:
        train_table(result, console, folder)


@app.command()
@scenario_options
def generalizability(scenario,  # noqa: ANN001
                     data_root: Annotated[str, typer.Option(help="Data folder, or 'synthetic'.")] = "synthetic",
                     metric: Annotated[str, typer.Option(help="til or cil accuracy.")] = "til",
                     tolerance: Annotated[float, typer.Option(help="Accuracy change (fraction) still counted as none.")] = 0.01,
                     as_json: AsJson = False) -> None:
    """Memory stability and learning plasticity of every layer after two tasks (LightCL, Eq. 1-2)."""
    from costmodel import methods as method_catalog
    from lightcl.data import load
    from lightcl.generalizability import analyze
    from reports.terminal_train import generalizability_table

    if metric not in ("til", "cil"):
        from costmodel.errors import suggest
        raise suggest(metric, ["til", "cil"], "metric")
    s = method_catalog.resolve(scenario.replace(method="sgd"))
    data = load(s, data_root)
    with _train_progress(2 * s.epochs) as report:
        result = analyze(s, data, s.device, metric, tolerance, progress=report)
    if as_json:
        emit_json(result.to_json())
    else:
        generalizability_table(result, console)


class CostclInterrupt(Exception):
    """Ctrl-C during training: a message, exit status 130."""


def _train_progress(total_epochs: int):  # noqa: ANN202
    import contextlib

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    @contextlib.contextmanager
    def bar():  # noqa: ANN202
        err = Console(stderr=True)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as p:
            bar_id = p.add_task("training", total=total_epochs, info="")
            seen: set[tuple] = set()

            def report(info: dict) -> None:
                key = (info["task"], info["phase"], info["epoch"])
                if key not in seen:
                    seen.add(key)
                    p.update(bar_id, completed=len(seen) - 1)
                p.update(bar_id, description=f"task {info['task'] + 1} epoch {info['epoch']}/{info['epochs']}",
                         info=f"loss {info['loss']:.3f}  {info['images_per_s']:.0f} img/s")
            yield report
    return bar()


Mib = Annotated[Optional[float], typer.Option("--mib", help="An amount of memory in MiB.")]


@app.command()
def convert(model: Annotated[str, typer.Option(help="Model (see `costcl models`).")] = "resnet32-cifar",
            dataset: Annotated[str, typer.Option(help="Dataset (sets the exemplar's size).")] = "cifar100",
            input_size: Annotated[Optional[str], typer.Option(help="C,H,W of custom data.")] = None,
            exemplars: Annotated[Optional[int], typer.Option(help="How much memory N exemplars take.")] = None,
            mib: Mib = None, as_json: AsJson = False) -> None:
    """One backbone in exemplars, and back (MEMO's counting: 4 bytes a parameter, uint8 images)."""
    from budgets.accounting import convert as run_convert
    from costmodel.scenario import Scenario, parse_input_size
    from reports.terminal_budgets import conversion_text

    s = Scenario(model=model, dataset=dataset,
                 input_size=parse_input_size(input_size) if input_size else None)
    result = run_convert(model, dataset, s.input_shape, exemplars, mib)
    if as_json:
        emit_json(result.to_json())
    else:
        conversion_text(result, console)


@app.command()
@scenario_options
def budget(scenario,  # noqa: ANN001
           protocol: Annotated[Optional[str], typer.Option(help="MEMO's fair or auc protocol.")] = None,
           init: Annotated[Optional[int], typer.Option(help="Classes of the first task.")] = None,
           increment: Annotated[Optional[int], typer.Option(help="Classes per later task.")] = None,
           base_exemplars: Annotated[int, typer.Option(help="The benchmark buffer (MEMO: 2000).")] = 2000,
           budget_mib: Annotated[Optional[float], typer.Option(help="A total memory budget to share out.")] = None,
           flops_budget: Annotated[Optional[float], typer.Option(help="A total training-FLOPs budget.")] = None,
           methods_: Annotated[str, typer.Option("--methods", help="Methods for --budget-mib / --flops-budget.")] = "der-expand,memo,icarl,er,lightcl",
           counting: Annotated[str, typer.Option("--convention", help="memo (model bytes) or runtime (whole peak) for --budget-mib.")] = "memo",
           as_json: AsJson = False) -> None:
    """Equal budgets: MEMO's fair and auc protocols, any memory budget, or a FLOPs budget."""
    from reports import terminal_budgets as out

    s = scenario.replace(model=scenario.model or "resnet32-cifar",
                         dataset=scenario.dataset or "cifar100")
    chosen = [x for x in (protocol, budget_mib, flops_budget) if x is not None]
    if len(chosen) != 1:
        raise CostclError("give exactly one of --protocol fair|auc, --budget-mib X or --flops-budget X")
    if protocol is not None:
        from budgets import protocols
        if protocol == "fair":
            table = protocols.fair(s.dataset, s.model, s.input_shape, s.classes,
                                   init if init is not None else (increment or 10),
                                   increment if increment is not None else (init or 10),
                                   base_exemplars)
            emit_json(table.to_json()) if as_json else out.budget_table(table, console)
        elif protocol == "auc":
            tables = protocols.auc(s.dataset, s.input_shape, s.classes, init, increment, base_exemplars)
            emit_json([t.to_json() for t in tables]) if as_json else out.auc_table(tables, console)
        else:
            from costmodel.errors import suggest
            raise suggest(protocol, ["fair", "auc"], "protocol")
        return
    from reports.compare import parse_methods
    names = parse_methods(methods_)
    if budget_mib is not None:
        from budgets.equal import equal_budget
        rows = equal_budget(round(budget_mib * 2**20), s, names, counting)
        emit_json([r.to_json() for r in rows]) if as_json else out.equal_table(rows, budget_mib, counting, console)
    else:
        from budgets.equal import flops_budget as run_flops
        rows = run_flops(flops_budget, s, names)
        emit_json([r.to_json() for r in rows]) if as_json else out.epochs_table(rows, flops_budget, console)


@app.command()
def devices() -> None:
    """The device profiles: memory, what the system keeps, what is left for training."""
    from budgets.devices import DEVICES
    from reports.listing import listing

    listing(console, ("device", "total MiB", "OS MiB", "runtime MiB", "usable MiB", "runs on"),
            [(d.name, f"{d.total_mib:,}", f"{d.os_reserve_mib:,}", f"{d.runtime_reserve_mib:,}",
              f"{d.usable_mib:,}", d.runs_on) for d in DEVICES.values()])
    for d in DEVICES.values():
        console.print(f"[bold]{d.name}[/bold]: {d.note}")
    console.print("[dim]reserves are costcl's documented estimates; --memory-mib X sets the usable "
                  "memory of any device[/dim]")


@app.command()
@scenario_options(exclude=("device",))
def fit(scenario,  # noqa: ANN001
        device: Annotated[Optional[str], typer.Option(help="A device profile (see `costcl devices`).")] = None,
        memory_mib: Annotated[Optional[float], typer.Option(help="Usable memory of any other device.")] = None,
        methods_: Annotated[Optional[str], typer.Option("--methods", help="Also: which of these methods fit at all.")] = None,
        as_json: AsJson = False) -> None:
    """The largest batch size and buffer that fit on a device, and which methods fit at all."""
    from budgets.devices import device as profile
    from budgets.fit import fit as run_fit
    from reports.compare import parse_methods
    from reports.terminal_budgets import fit_table

    result = run_fit(profile(device, memory_mib), scenario,
                     parse_methods(methods_) if methods_ else [])
    if as_json:
        emit_json(result.to_json())
    else:
        fit_table(result, console)


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
    """List the CL methods costcl can cost, with the paper each comes from."""
    from costmodel.methods import catalog
    from reports.listing import listing

    listing(console, ("method", "what it does (source)"),
            [(m.name, f"{m.summary}; from {m.paper}") for m in catalog().values()])


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


def _click_exceptions():  # noqa: ANN202
    """typer vendors click (typer._click) in recent releases; older ones use click."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions
    return exceptions


def run(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit status 2, never a traceback."""
    exc = _click_exceptions()
    no_args = getattr(exc, "NoArgsIsHelpError", ())
    aborts = tuple(c for c in (getattr(exc, "Abort", None), KeyboardInterrupt) if c)
    exits = getattr(exc, "Exit", ())
    try:
        app(args=argv, standalone_mode=False)
    except CostclError as e:
        print(f"costcl: error: {e}", file=sys.stderr)
        sys.exit(2)
    except no_args:
        sys.exit(0)
    except exc.UsageError as e:
        name = e.ctx.command_path if e.ctx else "costcl"
        print(f"costcl: error: {e.format_message()} (see: {name} --help)", file=sys.stderr)
        sys.exit(2)
    except CostclInterrupt as e:
        print(f"costcl: {e}", file=sys.stderr)
        sys.exit(130)
    except aborts:
        print("costcl: interrupted", file=sys.stderr)
        sys.exit(130)
    except exits as e:
        sys.exit(e.exit_code)
    except BrokenPipeError:  # `costcl ... | head`: the reader left; so do we, quietly
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    run()
