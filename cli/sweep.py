"""Sweeps: plan every point of a sweep file with costcl's own prediction, then run them.

Planning resolves each point's scenario, predicts its memory and FLOPs (one trace
serves every batch size and seed of a method; the cache keeps it for the next
process), refuses points that cannot fit the device they ask for, and sizes what
each point asks the scheduler for: Ray reserves a point's predicted memory, so it
never packs two points onto a device that cannot hold both.  Running hands the
points to Ray (:mod:`cli.sweep_ray`) or, without it, runs them one after another
in this process; either way each finished point is one line of
``results.jsonl`` (:mod:`cli.sweep_store`), so a rerun does only what is missing.
"""
from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.sweep_file import Point, Sweep
from costmodel import methods
from costmodel.errors import CostclError
from costmodel.scenario import Scenario, build

MIB = 2**20
PROCESS_BYTES = 1024 * MIB
"""Host memory a point's process needs besides its tensors: Python, torch and costcl
imported (a Ray worker measured 0.6-0.7 GiB resident here), with room to spare."""
CUDA_RESERVE_BYTES = 512 * MIB
"""What a CUDA process holds outside costcl's prediction: the context, cuDNN and cuBLAS
workspaces (budgets/devices.py reserves as much for the runtime)."""


@dataclass(frozen=True)
class Resources:
    """What a point asks the scheduler for."""
    cpus: int
    gpus: float
    memory_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "gpus": self.gpus, "memory_bytes": self.memory_bytes}


@dataclass
class PlannedPoint:
    point: Point
    scenario: Scenario
    """Resolved: every default filled in, as the job will run it."""
    predicted: dict[str, Any]
    resources: Resources
    refused: str | None = None
    """Why the point cannot run (it does not fit its device or its budget), or None."""

    @property
    def key(self) -> str:
        return self.point.key

    def to_json(self) -> dict[str, Any]:
        p = self.point
        return {"point": p.key, "index": p.index + 1, "coordinates": p.coordinates,
                "scenario": self.scenario.to_json(), "seed": p.seed, "budget_mib": p.budget_mib,
                "job": p.job.to_json(), "predicted": self.predicted,
                "resources": self.resources.to_json(), "refused": self.refused}

    def payload(self, engine: str) -> dict[str, Any]:
        """What :func:`cli.sweep_jobs.run_point` needs: plain JSON, so it travels to any worker."""
        from cli.sweep_jobs import own_paths

        return {"scenario": self.scenario.to_json(), "seed": self.point.seed,
                "kind": self.point.job.kind, "options": self.point.job.options,
                "cpus": self.resources.cpus, "engine": engine, "sys_path": own_paths()}

    def line(self, outcome: dict[str, Any]) -> dict[str, Any]:
        """The results.jsonl line of this point once it ran."""
        d = self.to_json()
        del d["refused"]
        return d | {k: outcome[k] for k in ("status", "error", "result", "measured", "ran_on",
                                            "seconds")} | {
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}


def scenario_of(sweep: Sweep, point: Point) -> tuple[Scenario, str | None]:
    """The point's resolved scenario, and why it cannot run if its budget is too small;
    a bad value is one line naming the point."""
    refused = None
    try:
        s = build(point.values)
        method = methods.get(s.method, s.impl)
        set_here = any("sparsity" in (v if isinstance(v, dict) else {k: v})
                       for k, v in point.coordinates.items())
        if s.sparsity and not method.sparse and not set_here:
            s = s.replace(sparsity=None)  # a shared sparsity is for the sparse methods, as in compare
        s, refused = _budgeted(sweep, point, s)
        s = methods.resolve(s)
        _check_job(s, point.job.kind)
    except CostclError as e:
        raise CostclError(f"{sweep.path.name}, point {point.index + 1} ({point.label}): {e}") from None
    return s, refused


def _check_job(s: Scenario, kind: str) -> None:
    """A job the method cannot run is bad input, found before any point runs."""
    if kind == "train":
        methods.check_trains(s, "a train job")


def device_memory_bytes(sweep: Sweep) -> dict[str, int | None]:
    """What each device holds: the sweep file's figure, else this machine's (None: unknown)."""
    out: dict[str, int | None] = {"cpu": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                                  "cuda": None}
    import torch

    if torch.cuda.is_available():
        out["cuda"] = int(torch.cuda.get_device_properties(0).total_memory)
    for device, mib in sweep.device_memory_mib.items():
        out[device] = int(mib * MIB)
    return out


def scenario_key(s: Scenario) -> str:
    """Points that differ only in what the scenario does not hold (a seed) share it."""
    return json.dumps(s.to_json(), sort_keys=True, default=str)


def _predict(s: Scenario, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from costmodel.estimation import estimate

    key = scenario_key(s)
    if key not in cache:
        e = estimate(s)
        cache[key] = {"peak_bytes": e.memory.peak_bytes, "run_peak_bytes": e.memory.run_peak_bytes,
                      "host_bytes": e.memory.host_bytes,
                      "step_flops": e.step.forward_flops + e.step.backward_flops,
                      "run_flops": e.run.total_flops,
                      "run_images": sum(ph.images * ph.tasks * ph.epochs for ph in e.run.phases),
                      "step_s": e.time.step_s if e.time else None,
                      "run_s": e.time.run_h * 3600 if e.time else None}
    return dict(cache[key])


def _budgeted(sweep: Sweep, point: Point, s: Scenario) -> tuple[Scenario, str | None]:
    """The buffer a ``budget_mib`` point keeps: the exemplars that fit its budget, shared out
    from the scenario as given (as ``costcl budget --budget-mib`` does)."""
    if point.budget_mib is None:
        return s, None
    from budgets.equal import equal_budget

    try:
        row = equal_budget(round(point.budget_mib * MIB), s, [f"{s.method}@{s.impl}" if s.impl else s.method],
                           sweep.job.budget_counting)[0]
    except CostclError as e:  # the method alone is over the budget
        return s, f"does not fit its {point.budget_mib:g} MiB budget: {e}"
    if row.short_by_bytes:
        return s, f"does not fit a {point.budget_mib:g} MiB budget ({row.short_by_bytes / MIB:.2f} MiB short)"
    return (s.replace(buffer_size=row.exemplars) if row.exemplars is not None else s), None


def _needs(kind: str, options: dict[str, Any], s: Scenario, predicted: dict[str, Any]) -> int:
    """Device bytes a point's job allocates: a run's whole peak, a validation's step peak;
    an estimate, or a CPU validation on fake tensors, allocates nothing real (on CUDA,
    validate measures the allocator whatever ``fake`` says)."""
    if kind == "train":
        return predicted["run_peak_bytes"]
    if kind == "validate" and not (options["fake"] and s.device == "cpu"):
        return predicted["peak_bytes"]
    return 0


def _resources(point: Point, s: Scenario, need: int, predicted: dict[str, Any],
               limits: dict[str, int | None]) -> Resources:
    cpus = point.job.cpus
    if s.device != "cuda" or not need:
        return Resources(cpus, 0.0, PROCESS_BYTES + need)
    limit = limits["cuda"]
    gpus = 1.0 if limit is None else min(1.0, math.ceil(100 * (need + CUDA_RESERVE_BYTES) / limit) / 100)
    return Resources(cpus, gpus, PROCESS_BYTES + predicted["host_bytes"])


def plan(sweep: Sweep, progress: Callable[[str], None] | None = None,
         tracing: Callable[[str], None] | None = None) -> list[PlannedPoint]:
    """Every point resolved and predicted; any bad point fails here, before one runs.
    Scenarios not in the disk cache are first estimated on every core
    (:mod:`cli.sweep_prewarm`; ``tracing`` hears of each)."""
    from cli.sweep_prewarm import prewarm

    say = progress or (lambda _: None)
    points = sweep.points()
    limits = device_memory_bytes(sweep)
    cache: dict[str, dict[str, Any]] = {}
    out = []
    resolved = [(point, *scenario_of(sweep, point)) for point in points]
    prewarm([s for _, s, _ in resolved], tracing)
    for point, s, refused in resolved:
        try:
            predicted = _predict(s, cache)
        except CostclError as e:
            raise CostclError(f"{sweep.path.name}, point {point.index + 1} ({point.label}): {e}") from None
        # what the job's own measured seconds compare with: a run's, a validated step's
        predicted["seconds"] = {"train": predicted["run_s"],
                                "validate": predicted["step_s"]}.get(point.job.kind)
        need = _needs(point.job.kind, point.job.options, s, predicted)
        limit = limits[s.device]
        if refused is None and limit is not None and need > limit:
            refused = (f"needs {need / MIB:,.1f} MiB on {s.device}, which holds {limit / MIB:,.0f} "
                       "MiB")
        out.append(PlannedPoint(point, s, predicted, _resources(point, s, need, predicted, limits),
                                refused))
        say(point.label)
    return out


@dataclass
class RunSummary:
    engine: str
    points: int
    already: int = 0
    """Points a previous run had finished (skipped)."""
    ok: int = 0
    failed: int = 0
    refused: list[PlannedPoint] = field(default_factory=list)
    foreign: int = 0
    """Lines in results.jsonl of points that are not in this sweep (kept, not counted)."""

    @property
    def done(self) -> int:
        return self.already + self.ok + self.failed


def run(planned: list[PlannedPoint], out: Path, engine: Any, retry_failed: bool = False,
        progress: Callable[[str], None] | None = None) -> RunSummary:
    """Run the points not yet in ``out``/results.jsonl on ``engine``; each appends its line.

    ``engine`` is prepared (Ray started, the cluster checked) before this is called, so
    a sweep the cluster cannot run is refused before the results file is touched.
    """
    from cli.sweep_store import ResultStore

    say = progress or (lambda _: None)
    runnable = [p for p in planned if p.refused is None]
    summary = RunSummary(engine.name, len(planned), refused=[p for p in planned if p.refused])
    with ResultStore(out) as store:
        finished = store.finished
        keys = {p.key for p in planned}
        summary.foreign = sum(1 for k in finished if k not in keys)
        todo = []
        for p in runnable:
            line = finished.get(p.key)
            if line is None or (retry_failed and line.get("status") != "ok"):
                todo.append(p)
            else:
                summary.already += 1
                say(p.point.label)

        def record(p: PlannedPoint, outcome: dict[str, Any]) -> None:
            store.append(p.line(outcome))
            if outcome["status"] == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
            say(p.point.label)

        engine.run(todo, record)
    return summary


class InProcess:
    """One point after another in this process: the same jobs and lines as on Ray."""
    name = "in-process"

    def run(self, todo: list[PlannedPoint], record: Callable[[PlannedPoint, dict], None]) -> None:
        from cli.sweep_jobs import run_point

        for p in todo:
            record(p, run_point(p.payload(self.name)))
