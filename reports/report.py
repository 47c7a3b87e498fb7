"""``costcl report``: an HTML page and a Markdown file with charts, for people.

Sections: the peak-memory breakdown per method (runtime beside paper), FLOPs
per step and per run, exemplars that fit as the budget grows (with the device
profiles), the LightCL table beside costcl, predicted against measured (when
validation results are given) and the per-layer view.  Each chart has the
numbers it shows in a table below it.

The whole report (pages, charts, marker) is built in a staging folder and then
swapped in place of ``--out`` (:mod:`reports.outdir`): nobody ever sees the old
``index.html`` beside the new charts, and a report that fails leaves the old one
whole.  ``--out`` is checked before any work (:func:`check_out`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costmodel import methods as catalog
from costmodel.errors import CostclError
from costmodel.estimation import estimate
from costmodel.scenario import Scenario
from reports import charts
from reports.formats import validation_rows
from reports.outdir import check_out, publish
from reports.report_render import Section, markdown, page
from reports.units import MIB

__all__ = ["Section", "Sweeps", "build", "check_out", "load_validations", "progress_steps"]


VALIDATION_KEYS = frozenset({"predicted", "measured", "compared_peak_bytes", "relative_error"})
"""What makes a JSON object a validation result (``Validation.to_json()``)."""


def load_validations(folder: Path) -> list[dict[str, Any]]:
    """Validation results: ``costcl validate --json`` files or ``validation/run_cuda.py``'s."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CostclError(f"--validation {str(folder)!r} is not a folder of validation results")
    items: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for d in data.get("cases", [data]) if isinstance(data, dict) else []:
            if isinstance(d, dict) and VALIDATION_KEYS <= d.keys():
                items.append(d)
    if not items:
        raise CostclError(f"no validation results in {str(folder)!r}: expected JSON files written "
                          "by `costcl validate --json` or validation/run_cuda.py")
    return items


def _validation_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scatter's points, read through the CSV rows (one reader of the JSON shape)."""
    out = []
    for r in (validation_rows(d)[0] for d in items):
        measured = r["measured_peak_bytes"]
        out.append({"method": r["method"], "model": r["model"], "device": r["device"],
                    "predicted_peak_mib": round(r["compared_peak_bytes"] / MIB, 2),
                    "measured_peak_mib": round(measured / MIB, 2) if measured else None,
                    "predicted_flops": r["predicted_forward_flops"] + r["predicted_backward_flops"],
                    "measured_flops": r["measured_forward_flops"] + r["measured_backward_flops"],
                    "peak_error": r["relative_error_peak"]})
    return out


@dataclass
class Sweeps:
    """What the budgets package computes for the report (``budgets.curves``); the caller
    passes it in, so reports need not import budgets."""
    exemplars: dict[str, list[tuple[float, int | None]]]
    """Per method: (budget MiB, exemplars that fit or None)."""
    no_exemplars: list[str]
    batch_peaks: dict[str, list[tuple[float, int | None]]]
    """Per method: (batch size, runtime peak bytes)."""
    devices: list[tuple[str, float]]
    """(name, usable MiB) of each device profile."""


Progress = Callable[[str], None]
"""Called when a piece of work ends, with a few words on what runs next (a progress bar)."""


def cut_sweep(s: Scenario) -> list[Any]:
    """Latent replay's estimate at every cut the model allows, shallow to deep."""
    from costmodel import engine

    base = catalog.resolve(catalog.named(s, "latent-replay"))
    cuts = engine.step_model(base, catalog.get("latent-replay")).network.cuts
    return [estimate(base.replace(options={**base.options, "cut": cut})) for cut in cuts]


def _table_rows() -> int:
    """How many times the LightCL table's costing ticks (a row on each dataset)."""
    from reports.paper_table import DATASETS, published

    return len(published()["rows"]) * len(DATASETS)


def progress_steps() -> int:
    """How many times :func:`build` calls its ``progress``: the bar's length for this part."""
    return 6 + _table_rows()


def build(s: Scenario, names: list[str], out: Path, sweeps: Sweeps,
          validations: list[dict[str, Any]] | None = None,
          progress: Progress | None = None) -> list[Section]:
    """Compute every section and draw it into a staging folder, then swap it in as ``out``."""
    say = progress or (lambda _: None)
    catalog.check_shared(s, names)

    def write(stage: Path) -> list[Section]:
        sections = _sections(s, names, stage, sweeps, validations, say)
        (stage / "report.md").write_text(markdown(s, names, sections))
        (stage / "index.html").write_text(page(s, names, sections))
        return sections

    sections = publish(out, write)
    say("done")
    return sections


def _sections(s: Scenario, names: list[str], stage: Path, sweeps: Sweeps,
              validations: list[dict[str, Any]] | None, say: Progress) -> list[Section]:
    runtime = [estimate(catalog.named(s, n)) for n in names]
    paper = [estimate(catalog.named(s, n), convention="paper") for n in names]
    keys = ("model", "dataset", "tasks", "epochs", "batch_size", "replay_batch", "buffer_size",
            "optimizer", "dtype", "sparsity", "device")
    scen = [{"method": e.scenario.method, **{k: getattr(e.scenario, k) for k in keys}}
            for e in runtime]
    focus = "lightcl" if "lightcl" in names else names[0]
    layered = estimate(catalog.named(s, focus), layers=True)
    say("drawing the memory and FLOPs charts")
    out = [
        Section("Scenario per method", None,
                "Each method's scenario as costcl resolved it: what the command line gave, the "
                "method's paper defaults for the rest, then the dataset's.", scen),
        Section("Peak memory per method", "memory.png",
                "The peak of one training step, by term. Runtime: what PyTorch allocates (weights, "
                "gradients present at the peak, optimizer state, activations kept for backward, "
                "buffer, method state, temporaries). Paper: the LightCL table's accounting "
                "(weights, gradients and main-path convolution outputs only).",
                charts.memory_breakdown(runtime, paper, stage / "memory.png")),
        Section("FLOPs per step and per run", "flops.png",
                "Forward and backward FLOPs of one step and of the whole continual-learning "
                "schedule, counted as FlopCounterMode counts them.",
                charts.flops(runtime, stage / "flops.png")),
    ]
    timed = [e for e in runtime if getattr(e, "time", None) is not None]
    if timed:
        state = "calibrated" if timed[0].time.calibrated else "uncalibrated"
        out.append(Section(
            "Time per step and per run", None,
            f"Seconds of one step and hours of the whole run on device profile "
            f"{timed[0].time.profile} ({state}: {timed[0].time.profile_source}), from the "
            "traced ops: convolutions and products by FLOPs at their shape bucket's rate, "
            "element-wise and normalisation ops by bytes moved, a fixed cost per op; shares "
            "are of the step.", [time_row(e) for e in timed]))
    say("drawing the budget charts")
    skipped = sweeps.no_exemplars
    note = (f" {', '.join(skipped)} {'keeps' if len(skipped) == 1 else 'keep'} no exemplars."
            if skipped else "")
    out.append(Section("Peak memory as the batch grows", "batch.png",
                       "The runtime peak of one step at each batch size (a method that replays "
                       "keeps its replay-batch rule); dashed lines: the usable memory of the "
                       "device profiles, so the largest batch that fits is where a line crosses.",
                       charts.batch_memory(sweeps.batch_peaks, sweeps.devices, stage / "batch.png")))
    out.append(Section("Exemplars as the budget grows", "budget.png",
                       "MEMO's view with the runtime convention: for each total budget, how many "
                       "exemplars a method can keep beside everything else its step needs, in the "
                       "method's own exemplar format; dashed lines: the usable memory of the device "
                       f"profiles.{note}",
                       charts.equal_budget(sweeps.exemplars, sweeps.devices, stage / "budget.png")))
    total, done = _table_rows(), 0
    say(f"costing the LightCL table (0 of {total})")

    def row_done() -> None:
        nonlocal done
        done += 1
        say(f"costing the LightCL table ({done} of {total})" if done < total
            else "drawing the LightCL table")

    from reports.paper_table import cells
    table = cells(progress=row_done)
    out.append(Section("The LightCL table beside costcl", "lightcl_table.png",
                       "Published Mem (MiB) and FLOPs beside costcl's paper and runtime conventions "
                       "(costcl paper lightcl lists every cell that differs, with the reason).",
                       charts.lightcl_table(table, stage / "lightcl_table.png")))
    if validations is not None:
        rows = _validation_rows(validations)
        out.append(Section("Predicted against measured", "validation.png",
                           "Each point is a validated training step (costcl validate): measured on "
                           "the x axis, predicted on the y axis; the band is ±5%.",
                           charts.validation_scatter(rows, stage / "validation.png")))
    if "latent-replay" in names:
        out.append(Section("Latent replay: where to cut", "cut.png",
                           "Latent replay's step at every cut layer: the buffer holds that "
                           "layer's activations, and only the layers after it train. Bars: the "
                           "runtime peak by term; line: the step's FLOPs.",
                           charts.cut_sweep(cut_sweep(s), stage / "cut.png")))
    say("drawing the per-layer chart")
    out.append(Section(f"Per layer: {focus} on {layered.scenario.model}", "layers.png",
                       "Forward FLOPs and activation bytes kept for backward, layer by layer in "
                       "forward order; shaded layers are frozen (no backward, nothing kept). A block's "
                       "own row holds what its forward does outside its submodules (the residual "
                       "add); <model> is the model's own code, <step> the method's (e.g. its loss "
                       "terms and stored feature maps).",
                       charts.layers(layered, stage / "layers.png")))
    say("writing the report")
    return out


def time_row(e: Any) -> dict[str, Any]:
    """One method's time block as a report row: seconds, hours, the three largest shares."""
    t = e.time
    top = sorted(t.share.items(), key=lambda kv: -kv[1])[:3]
    return {"method": f"{e.scenario.method}@{e.scenario.impl}", "step_s": round(t.step_s, 4),
            "forward_s": round(t.forward_s, 4), "backward_s": round(t.backward_s, 4),
            "optimizer_s": round(t.optimizer_s, 5), "run_h": round(t.run_h, 2),
            "largest_shares": ", ".join(f"{k} {100 * v:.0f}%" for k, v in top)}
