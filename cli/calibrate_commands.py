"""``costcl calibrate``: measure this machine's speeds and write a device profile."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.app import AsJson, app, console, emit_json


@app.command()
def calibrate(device: Annotated[str, typer.Option(help="cpu or cuda: where the steps will run.")] = "cpu",
              out: Annotated[Optional[Path], typer.Option(help="The profile file to write (default: this machine's, which estimates then use).")] = None,
              as_json: AsJson = False) -> None:
    """Measure this machine's op rates and real training steps (about 35 s) and write a device profile."""
    from costmodel.files import atomic_write_text, check_can_create
    from costmodel.time_profile import default_path, load
    from lightcl.calibrate import benches, calibrate as run_calibrate
    from reports.terminal_time import calibration_table

    if device not in ("cpu", "cuda"):
        from costmodel.errors import suggest
        raise suggest(device, ["cpu", "cuda"], "device")
    target = out if out is not None else default_path(device)
    check_can_create(target, "--out", "give a file in a folder you can write")
    if target.is_dir():
        from costmodel.errors import CostclError
        raise CostclError(f"--out {str(target)!r} is a folder; give a file name, e.g. "
                          f"{str(target / 'profile.toml')!r}")
    from rich.console import Console
    from rich.progress import Progress

    err = Console(stderr=True)
    from lightcl.reference_step import ROUNDS
    built = benches(device) if device == "cpu" else None
    total = len(built) + ROUNDS if built is not None else None
    with Progress(console=err, transient=True, disable=not err.is_terminal) as p:
        task = p.add_task("calibrating", total=total)
        profile = run_calibrate(device, progress=lambda key: p.update(
            task, advance=1, description=f"calibrating {key}"), built=built)
    atomic_write_text(profile.to_toml(), target)
    load(target)  # what was written reads back
    if as_json:
        emit_json({"path": str(target), "name": profile.name, "device": profile.device,
                   "source": profile.source, "step_scale": profile.step_scale,
                   "fixed_scale": profile.fixed_scale,
                   "step_scale_source": profile.step_scale_source,
                   "rates": {k: vars(r) for k, r in profile.rates.items()}})
        return
    calibration_table(profile, console)
    console.print(f"wrote {target}" + ("" if out is not None else
                                       " (estimates on this machine use it from now on)"))
