"""``costcl report``: an HTML page and a Markdown file with charts, for people.

Sections: the peak-memory breakdown per method (runtime beside paper), FLOPs
per step and per run, exemplars that fit as the budget grows (with the device
profiles), the LightCL table beside costcl, predicted against measured (when
validation results are given) and the per-layer view.  Each chart has the
numbers it shows in a table below it.

Everything is computed and drawn into a staging folder first; the PNGs and
``report.md`` are then moved into ``--out`` and ``index.html`` is written last,
atomically: a report that fails leaves no half-written ``index.html``.
"""
from __future__ import annotations

import html
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costmodel import methods as catalog
from costmodel.errors import CostclError
from costmodel.estimation import estimate
from costmodel.files import atomic_write_text
from costmodel.scenario import Scenario
from reports import charts
from reports.formats import validation_rows
from reports.units import MIB


@dataclass
class Section:
    title: str
    image: str | None
    text: str
    rows: list[dict[str, Any]] = field(default_factory=list)


def check_out(out: Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CostclError(f"--out {str(out)!r} is a file; give a folder for the report")
    return out


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


def build(s: Scenario, names: list[str], out: Path, sweeps: Sweeps,
          validations: list[dict[str, Any]] | None = None,
          progress: Progress | None = None) -> list[Section]:
    """Draw every section into a staging folder, then move it into ``out``."""
    say = progress or (lambda _: None)
    out = check_out(out)
    for name in names:
        catalog.get(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".costcl-report-", dir=out.parent))
    try:
        sections = _sections(s, names, stage, sweeps, validations, say)
        say("writing")
        md = _markdown(s, names, sections)
        page = _html(s, names, sections)
        out.mkdir(parents=True, exist_ok=True)
        for png in stage.glob("*.png"):
            shutil.move(str(png), out / png.name)
        atomic_write_text(md, out / "report.md")
        atomic_write_text(page, out / "index.html")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return sections


def _sections(s: Scenario, names: list[str], stage: Path, sweeps: Sweeps,
              validations: list[dict[str, Any]] | None, say: Progress) -> list[Section]:
    say("estimating")
    runtime = [estimate(s.replace(method=n, options={})) for n in names]
    paper = [estimate(s.replace(method=n, options={}), convention="paper") for n in names]
    keys = ("model", "dataset", "tasks", "epochs", "batch_size", "replay_batch", "buffer_size",
            "optimizer", "dtype", "sparsity", "device")
    scen = [{"method": e.scenario.method, **{k: getattr(e.scenario, k) for k in keys}}
            for e in runtime]
    focus = "lightcl" if "lightcl" in names else names[0]
    layered = estimate(s.replace(method=focus, options={}), layers=True)
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
    say("budgets")
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
    say("the LightCL table")
    from reports.paper_table import cells
    table = cells()
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
    out.append(Section(f"Per layer: {focus} on {layered.scenario.model}", "layers.png",
                       "Forward FLOPs and activation bytes kept for backward, layer by layer in "
                       "forward order; shaded layers are frozen (no backward, nothing kept). A block's "
                       "own row holds what its forward does outside its submodules (the residual "
                       "add); <model> is the model's own code, <step> the method's (e.g. its loss "
                       "terms and stored feature maps).",
                       charts.layers(layered, stage / "layers.png")))
    return out


def _title(s: Scenario, names: list[str]) -> str:
    return f"costcl report: {', '.join(names)}"


def _scenario_line(s: Scenario) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in s.to_json().items()
                      if v not in (None, {}, []) and k not in ("method", "options"))
    return f"Input: {shown}."


def _markdown(s: Scenario, names: list[str], sections: list[Section]) -> str:
    lines = [f"# {_title(s, names)}", "", _scenario_line(s), ""]
    for sec in sections:
        lines += [f"## {sec.title}", "", sec.text, ""]
        if sec.image:
            lines += [f"![{sec.title}]({sec.image})", ""]
        if sec.rows:
            cols = list(sec.rows[0])
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("| " + " | ".join("---" for _ in cols) + " |")
            for row in sec.rows:
                lines.append("| " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
            lines.append("")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    if isinstance(v, int) and abs(v) >= 10**6:
        return f"{v:.3e}"
    return str(v)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
img{max-width:100%;height:auto}table{border-collapse:collapse;font-size:.8em;margin:1em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}p{line-height:1.5}"""


def _html(s: Scenario, names: list[str], sections: list[Section]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(_title(s, names))}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(_title(s, names))}</h1>"]
    parts.append("<p>" + e(_scenario_line(s)) + "</p>")
    for sec in sections:
        parts.append(f"<h2>{e(sec.title)}</h2><p>{e(sec.text)}</p>")
        if sec.image:
            parts.append(f"<img src='{e(sec.image)}' alt='{e(sec.title)}'>")
        if sec.rows:
            cols = list(sec.rows[0])
            parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
            for row in sec.rows:
                parts.append("<tr>" + "".join(f"<td>{e(_cell(row.get(c)))}</td>" for c in cols) + "</tr>")
            parts.append("</table>")
    parts.append("<p><small>Made by costcl. Predictions come from the engine's formulas over "
                 "facts traced on the meta device; published figures are shown beside them, "
                 "never copied into them.</small></p></body></html>")
    return "\n".join(parts)
