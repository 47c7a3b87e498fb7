"""Commands that run real steps: validate, train, generalizability."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from rich.console import Console

from cli.app import (AsJson, CostclInterrupt, Format, Threads, _progress, app, console, emit,
                     emit_json, use_threads)
from cli.options import DeviceProfileFile, scenario_options, time_profile
from costmodel.errors import CostclError


@app.command()
@scenario_options
def validate(scenario,  # noqa: ANN001
             steps: Annotated[int, typer.Option(help="Steps timed after the two measured ones.")] = 3,
             fake: Annotated[bool, typer.Option(help="Measure CPU memory on fake tensors (same bytes, no compute).")] = False,
             as_json: AsJson = False, format: Format = "table",
             device_profile: DeviceProfileFile = None, threads: Threads = None) -> None:
    """Run the method's real steps; measured peak memory, FLOPs and time beside costcl's prediction."""
    from lightcl.validate import validate as run_validate
    from reports.formats import validation_rows
    from reports.terminal_validate import validation_table

    _warn_fp16_on_cpu(scenario)
    speeds = time_profile(device_profile)
    use_threads(threads)
    with _progress(5, "validating") as advance:
        result = run_validate(scenario, scenario.device, steps=steps, fake=fake, progress=advance,
                              profile=speeds)
    d = result.to_json()
    emit(format, as_json, d, lambda: validation_rows(d), lambda: validation_table(result, console))


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
    from lightcl.checkpoint import check_out_folder
    from lightcl.data import load
    from lightcl.trainer import Trainer
    from reports.terminal_train import train_table

    if scenario.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CostclError("--device cuda, but no CUDA device is visible; use --device cpu")
    s = method_catalog.resolve(scenario)
    _warn_fp16_on_cpu(s)
    folder = Path(out) if out else Path("out") / f"{s.method}-{s.dataset}"
    check_out_folder(folder)  # before the data is read and anything trains; writes nothing
    data = load(s, data_root)
    total = sum(p.epochs * p.tasks for p in method_catalog.get(s.method).schedule(s))
    with _train_progress(total) as report:
        trainer = Trainer(s, data, s.device, folder, checkpoint, seed, progress=report)
        try:
            result = trainer.run(resume=resume)
        except KeyboardInterrupt:
            if not trainer.saved_tasks:
                raise CostclInterrupt("interrupted during the first task; nothing was saved") from None
            raise CostclInterrupt(f"interrupted; the last finished task ({trainer.saved_tasks} of "
                                  f"{s.tasks}) is saved in {folder}: rerun with --resume") from None
        except CostclError as e:
            if trainer.saved_tasks:  # a failure midway: say what is kept and how to go on
                raise CostclError(f"{e} (tasks 1-{trainer.saved_tasks} are saved in {folder}: "
                                  "rerun with --resume once that is fixed)") from None
            raise
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
    _warn_fp16_on_cpu(s)
    with _train_progress(2 * s.epochs) as report:
        result = analyze(s, data, s.device, metric, tolerance, progress=report)
    if as_json:
        emit_json(result.to_json())
    else:
        generalizability_table(result, console)


def _warn_fp16_on_cpu(s) -> None:  # noqa: ANN001
    """CPU half-precision kernels are emulated: a run that looks hung deserves a word first."""
    import sys

    if s.dtype == "fp16" and s.device == "cpu":
        print("costcl: warning: fp16 on the CPU is emulated and very slow; use --dtype bf16 "
              "(or fp32) on the CPU", file=sys.stderr)


def _train_progress(total_epochs: int):  # noqa: ANN202
    """A bar over the run's epochs that moves with every step (and shows the step
    before the first one finishes), so a slow first step does not look like a hang."""
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
                seen.add(key)
                done = info.get("epochs_done", len(seen) - 1)
                steps, step = info.get("steps") or 0, info.get("step") or 0
                p.update(bar_id, completed=done + (step / steps if steps else 0))
                where = f"task {info['task'] + 1} epoch {info['epoch']}/{info['epochs']}"
                if steps:
                    where += f" step {step}/{steps}"
                loss, speed = info.get("loss"), info.get("images_per_s")
                p.update(bar_id, description=where,
                         info=(f"loss {loss:.3f}" if loss is not None else "")
                         + (f"  {speed:.0f} img/s" if speed is not None else ""))
            yield report
    return bar()
