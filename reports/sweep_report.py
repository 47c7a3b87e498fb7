"""``costcl report --sweep DIR``: a sweep's results drawn for people.

Sections: every point with its prediction beside what it measured; predicted
against measured peak memory and FLOPs (validate points, and train points on
CUDA, where the allocator's peak is read); measured seconds against predicted
FLOPs (what a time model would be fitted to); accuracy against memory for train
sweeps; the points that failed, with their reason.  Written like ``costcl
report``: built in a staging folder and swapped in whole (:mod:`reports.outdir`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reports import charts, sweep_charts
from reports.outdir import check_out, publish
from reports.report_render import Section, html_document, markdown_document
from reports.sweep_results import SweepResults, load, point_label
from reports.units import MIB

__all__ = ["PROGRESS_STEPS", "build", "check_out", "load", "point_rows"]

PROGRESS_STEPS = 5
"""How many times :func:`build` calls its ``progress``."""


def _label(line: dict[str, Any], without: tuple[str, ...] = ()) -> str:
    return point_label(line.get("coordinates", {}), without)


def _compared(line: dict[str, Any]) -> tuple[int | None, int | None, int | None, int | None]:
    """(predicted peak, measured peak, predicted FLOPs, measured FLOPs) as the job compares them:
    a validation's step (its own compared prediction), a run's whole peak and FLOPs."""
    kind, p = line["job"]["kind"], line.get("predicted") or {}
    m, r = line.get("measured") or {}, line.get("result") or {}
    if kind == "validate":
        return (r.get("compared_peak_bytes", p.get("peak_bytes")), m.get("peak_bytes"),
                p.get("step_flops"), m.get("step_flops"))
    if kind == "train":
        return p.get("run_peak_bytes"), m.get("peak_bytes"), _trained_flops(line), None
    return p.get("peak_bytes"), None, p.get("step_flops"), None


def _trained_flops(line: dict[str, Any]) -> int | None:
    """The predicted FLOPs of the images a run really trained: the whole run's, scaled by
    those images over the dataset's (a run on synthetic:20 trains on a few hundred)."""
    p, tasks = line.get("predicted") or {}, (line.get("result") or {}).get("tasks")
    if not tasks or not p.get("run_images"):
        return p.get("run_flops")
    return round(p["run_flops"] * sum(t["images"] for t in tasks) / p["run_images"])


def _seconds(line: dict[str, Any]) -> float | None:
    """A validation's seconds per step; a run's training seconds (evaluation left out)."""
    r = line.get("result") or {}
    if line["job"]["kind"] == "validate":
        return (r.get("measured") or {}).get("seconds_per_step")
    if line["job"]["kind"] == "train" and r.get("tasks"):
        return sum(t["seconds"] for t in r["tasks"])
    return None


def point_rows(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for line in lines:
        pp, mp, pf, mf = _compared(line)
        r = line.get("result") or {}
        final = r.get("final") or {}
        where = line.get("ran_on") or {}
        rows.append({"#": line.get("index"), "point": _label(line), "job": line["job"]["kind"],
                     "status": line.get("status"),
                     "predicted_peak_mib": round(pp / MIB, 2) if pp else None,
                     "measured_peak_mib": round(mp / MIB, 2) if mp else None,
                     "peak_error": (pp - mp) / mp if pp and mp else None,
                     "predicted_flops": pf, "measured_flops": mf, "seconds": _seconds(line),
                     "final_cil": final.get("cil"), "final_til": final.get("til"),
                     "ran_on": f"{where.get('engine', '-')} {where.get('host', '')}".strip()})
    return rows


def _accuracy_groups(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train points that finished, grouped by everything but the seed."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line["job"]["kind"] == "train" and line.get("status") == "ok":
            key = json.dumps([line["scenario"], line.get("budget_mib")], sort_keys=True)
            groups.setdefault(key, []).append(line)
    out = []
    for members in groups.values():
        cil = [m["result"]["final"]["cil"] for m in members]
        measured = [(m.get("measured") or {}).get("peak_bytes") for m in members]
        peak = (max(measured) if all(measured) else members[0]["predicted"]["run_peak_bytes"])
        out.append({"point": _label(members[0], without=("seed",)), "seeds": len(members),
                    "peak_mib": round(peak / MIB, 2),
                    "memory": "measured" if all(measured) else "predicted",
                    "cil_mean": sum(cil) / len(cil), "cil_min": min(cil), "cil_max": max(cil)})
    return out


Progress = Callable[[str], None]


def build(results: SweepResults, folder: Path, out: Path,
          progress: Progress | None = None) -> list[Section]:
    """Draw the sweep into a staging folder, then swap it in as ``out``."""
    say = progress or (lambda _: None)
    lines = sorted(results.lines.values(), key=lambda d: (d.get("index") or 0, d["point"]))

    def write(stage: Path) -> list[Section]:
        sections = _sections(lines, stage, say)
        title = f"costcl sweep report: {folder.name or folder}"
        intro = (f"{len(lines)} points from {folder / 'results.jsonl'}: "
                 f"{sum(1 for d in lines if d.get('status') == 'ok')} ok, "
                 f"{sum(1 for d in lines if d.get('status') != 'ok')} failed.")
        (stage / "report.md").write_text(markdown_document(title, intro, sections))
        (stage / "index.html").write_text(html_document(
            title, intro, sections, "Predictions come from the engine; measurements from the "
            "points' own runs."))
        return sections

    sections = publish(out, write)
    say("done")
    return sections


def _sections(lines: list[dict[str, Any]], stage: Path, say: Progress) -> list[Section]:
    rows = point_rows(lines)
    out = [Section("Points", None, "Every finished point: its prediction (a validation's compared "
                   "step peak; a run's whole peak and FLOPs) beside what it measured, its seconds, "
                   "its final accuracy, and where it ran.", rows)]
    say("drawing predicted against measured")
    measured = [r for r in rows if r["measured_peak_mib"] or r["measured_flops"]]
    if measured:
        out.append(Section("Predicted against measured", "validation.png",
                           "Measured on the x axis, predicted on the y axis; the band is ±5%. "
                           "Validate points measure a step's peak and FLOPs; train points on CUDA "
                           "the allocator's peak over the run.",
                           charts.validation_scatter(measured, stage / "validation.png")))
    else:
        out.append(Section("Predicted against measured", None,
                           "No point of this sweep measured memory or FLOPs: estimate jobs "
                           "measure nothing and train jobs on the CPU no memory (validate jobs "
                           "measure both, train jobs on CUDA the peak)."))
    say("drawing time against FLOPs")
    timed = [{"#": r["#"], "point": r["point"], "job": r["job"],
              "predicted_flops": r["predicted_flops"], "seconds": r["seconds"]}
             for r in rows if r["seconds"] and r["predicted_flops"]]
    if timed:
        out.append(Section("Measured time against predicted FLOPs", "time.png",
                           "What a time model will be fitted to: a validation's seconds per step "
                           "against its step FLOPs, a run's training seconds (evaluation left out) "
                           "against the predicted FLOPs of the images it trained (the whole run's "
                           "scaled by those images over the dataset's).",
                           sweep_charts.seconds_flops(timed, stage / "time.png")))
    say("drawing accuracy against memory")
    groups = _accuracy_groups(lines)
    if groups:
        out.append(Section("Accuracy against memory", "accuracy.png",
                           "Each configuration's final class-IL accuracy, the mean over its seeds "
                           "(bars: lowest to highest), against its peak memory: measured where "
                           "the allocator was read (CUDA), else predicted.",
                           sweep_charts.accuracy_memory(groups, stage / "accuracy.png")))
    failed = [{"#": d.get("index"), "point": _label(d), "error": d.get("error")}
              for d in lines if d.get("status") != "ok"]
    if failed:
        out.append(Section("Failed points", None, "Each failed point with its one-line reason; "
                           "`costcl sweep run --retry-failed` runs them again.", failed))
    say("writing the report")
    return out
