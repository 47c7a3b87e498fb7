"""Budget commands: convert, budget, fit and the device profiles."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli.app import AsJson, Format, _progress, app, console, emit, emit_json
from cli.options import DeviceProfileFile, TimeBudget, scenario_options, time_profile
from costmodel.errors import CostclError


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
           time_budget: TimeBudget = None,
           device_profile: DeviceProfileFile = None,
           methods_: Annotated[str, typer.Option("--methods", help="Methods for --budget-mib / --flops-budget / --time-budget.")] = "der-expand,memo,icarl,er,lightcl",
           counting: Annotated[str, typer.Option("--convention", help="memo (model bytes) or runtime (whole peak) for --budget-mib.")] = "memo",
           as_json: AsJson = False, format: Format = "table") -> None:
    """Equal budgets: MEMO's fair and auc protocols, any memory budget, a FLOPs or a time budget."""
    from reports import terminal_budgets as out
    from reports.formats import budget_rows

    s = scenario.replace(model=scenario.model or "resnet32-cifar",
                         dataset=scenario.dataset or "cifar100")
    chosen = [x for x in (protocol, budget_mib, flops_budget, time_budget) if x is not None]
    if len(chosen) != 1:
        raise CostclError("give exactly one of --protocol fair|auc, --budget-mib X, --flops-budget X "
                          "or --time-budget 2h")
    if time_budget is not None:
        from budgets.time_budget import parse_duration
        from budgets.time_budget import time_budget as run_time
        from costmodel.time_profile import for_device
        from reports.compare import parse_methods
        budget_s = parse_duration(time_budget)
        speeds = time_profile(device_profile) or for_device(s.device)
        names = parse_methods(methods_)
        with _progress(len(names), "timing") as advance:
            rows = run_time(budget_s, s, names, speeds, progress=advance)
        d = {"time_budget_s": budget_s, "profile": speeds.name, "calibrated": speeds.calibrated,
             "methods": [r.to_json() for r in rows]}
        emit(format, as_json, d, lambda: [r.to_json() | {"time_budget_s": budget_s}
                                          for r in rows],
             lambda: out.time_budget_table(rows, budget_s, speeds.name, console))
        return
    if protocol is not None:
        from budgets import protocols
        if protocol == "fair":
            table = protocols.fair(s.dataset, s.model, s.input_shape, s.classes,
                                   init if init is not None else (increment or 10),
                                   increment if increment is not None else (init or 10),
                                   base_exemplars)
            d = table.to_json()
            emit(format, as_json, d, lambda: budget_rows(d), lambda: out.budget_table(table, console))
        elif protocol == "auc":
            tables = protocols.auc(s.dataset, s.input_shape, s.classes, init, increment, base_exemplars)
            d = [t.to_json() for t in tables]
            emit(format, as_json, d, lambda: budget_rows(d), lambda: out.auc_table(tables, console))
        else:
            from costmodel.errors import suggest
            raise suggest(protocol, ["fair", "auc"], "protocol")
        return
    from reports.compare import parse_methods
    names = parse_methods(methods_)
    if budget_mib is not None:
        from budgets.equal import equal_budget
        from costmodel.checks import number
        mib = number(budget_mib, "--budget-mib", above=0)
        with _progress(len(names), "costing") as advance:
            rows = equal_budget(round(mib * 2**20), s, names, counting, progress=advance)
        d = [r.to_json() for r in rows]
        emit(format, as_json, d, lambda: budget_rows(d),
             lambda: out.equal_table(rows, budget_mib, counting, console))
    else:
        from budgets.equal import flops_budget as run_flops
        with _progress(len(names), "costing") as advance:
            rows = run_flops(flops_budget, s, names, progress=advance)
        d = [r.to_json() for r in rows]
        emit(format, as_json, d, lambda: budget_rows(d),
             lambda: out.epochs_table(rows, flops_budget, console))


@app.command()
@scenario_options(exclude=("device",))
def fit(scenario,  # noqa: ANN001
        device: Annotated[Optional[str], typer.Option(help="A device profile (see `costcl devices`).")] = None,
        memory_mib: Annotated[Optional[float], typer.Option(help="Usable memory of any other device.")] = None,
        methods_: Annotated[Optional[str], typer.Option("--methods", help="Also: which of these methods fit at all.")] = None,
        time_budget: TimeBudget = None, device_profile: DeviceProfileFile = None,
        as_json: AsJson = False, format: Format = "table") -> None:
    """The largest batch size and buffer that fit on a device, and which methods fit at all."""
    from budgets.devices import device as profile
    from budgets.fit import fit as run_fit
    from reports.compare import parse_methods
    from reports.formats import fit_rows
    from reports.terminal_budgets import fit_table

    others = parse_methods(methods_) if methods_ else []
    budget_s = None
    if time_budget is not None:
        from budgets.time_budget import parse_duration
        budget_s = parse_duration(time_budget)
    speeds = time_profile(device_profile)
    with _progress(1 + len(others), "fitting") as advance:
        result = run_fit(profile(device, memory_mib), scenario, others, progress=advance,
                         time_budget_s=budget_s, time_profile=speeds)
    d = result.to_json()
    emit(format, as_json, d, lambda: fit_rows(d), lambda: fit_table(result, console))


@app.command()
def devices() -> None:
    """The device profiles: memory, what the system keeps, what is left for training."""
    from budgets.devices import DEVICES
    from reports.listing import listing

    listing(console, ("device", "total MiB", "OS MiB", "runtime MiB", "usable MiB", "runs on",
                      "peak GFLOP/s", "GB/s"),
            [(d.name, f"{d.total_mib:,}", f"{d.os_reserve_mib:,}", f"{d.runtime_reserve_mib:,}",
              f"{d.usable_mib:,}", d.runs_on, f"{d.peak_flops / 1e9:,.0f}",
              f"{d.bandwidth_bytes_s / 1e9:,.1f}") for d in DEVICES.values()])
    for d in DEVICES.values():
        console.print(f"[bold]{d.name}[/bold]: {d.note}")
        console.print(f"  speeds (uncalibrated): {d.time_profile().source}")
    console.print("[dim]reserves are costcl's documented estimates; --memory-mib X sets the usable "
                  "memory of any device[/dim]")
