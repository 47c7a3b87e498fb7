"""One point's job, run where the point runs: a Ray worker or this process.

:func:`run_point` takes plain JSON (a Ray task's argument travels pickled between
machines, so nothing here holds a live object) and returns plain JSON: the job's
result as ``costcl estimate|validate|train --json`` prints it, or the one-line
reason it failed (a CUDA out-of-memory, data that cannot be read), and where it
ran.  A failure is a result, never an exception, so one bad point cannot stop a
sweep of hundreds; only Ctrl-C (``KeyboardInterrupt``) goes through.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from costmodel.errors import CostclError

Progress = Callable[..., None]


def one_line(e: BaseException) -> str:
    """An exception as one line: its first line, with its type where that says more."""
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    if isinstance(e, CostclError):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def where(engine: str) -> dict[str, Any]:
    """Where this process is: engine, host, process, and on Ray its node and GPUs."""
    out: dict[str, Any] = {"engine": engine, "host": socket.gethostname(), "pid": os.getpid()}
    if engine == "ray":
        import ray

        out["node_id"] = ray.get_runtime_context().get_node_id()
        out["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
    return out


class StopAtStep:
    """Ray cancels a running task with SIGINT: a ``KeyboardInterrupt`` wherever the task is.
    Landing inside an import (torch imports parts of itself lazily during the first steps),
    it leaves a module half-built in the worker, and every later point there fails.  So
    while a job runs on Ray the signal only asks, and the job stops at its next step (or
    phase), between imports; :meth:`check` is the job's progress callback."""

    def __init__(self, active: bool) -> None:
        self.active = active and threading.current_thread() is threading.main_thread()
        self.asked = False
        self._old: Any = None

    def __enter__(self) -> StopAtStep:
        if self.active:
            self._old = signal.signal(signal.SIGINT, self._ask)
        return self

    def _ask(self, signum: int, frame: Any) -> None:
        self.asked = True

    def check(self, *_: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self._old)


def own_paths() -> list[str]:
    """Folders on this process's import path that a fresh interpreter would not have: where
    a ``package.module:callable`` model factory may live (costcl adds the working folder)."""
    system = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)]
    out = []
    for p in sys.path:
        real = os.path.realpath(p or os.curdir)
        if os.path.isdir(real) and not any(real == s or real.startswith(s + os.sep) for s in system):
            out.append(real)
    return list(dict.fromkeys(out))


def run_point(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one point's job; ``payload`` is :meth:`cli.sweep.PlannedPoint.payload`."""
    start = time.perf_counter()
    with StopAtStep(payload["engine"] == "ray") as stop:  # first: torch's import is the longest
        for folder in payload.get("sys_path", []):  # appended: never shadows an installed module
            if folder not in sys.path:
                sys.path.append(folder)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(payload["cpus"])  # as many as the point was given, wherever it runs
        try:
            result, measured = _JOBS[payload["kind"]](payload, stop.check)
            status, error = "ok", None
        except Exception as e:  # noqa: BLE001 - a failed point is recorded, the sweep goes on
            result, measured, status, error = None, None, "failed", one_line(e)
        finally:
            torch.set_num_threads(threads)
        stop.check()  # cancelled outside a step: the driver has stopped listening anyway
    return {"status": status, "error": error, "result": result, "measured": measured,
            "ran_on": where(payload["engine"]), "seconds": time.perf_counter() - start}


def _scenario(payload: dict[str, Any]):  # noqa: ANN202
    from costmodel.scenario import Scenario

    return Scenario(**payload["scenario"])


def _estimate(payload: dict[str, Any], progress: Progress) -> tuple[dict[str, Any], None]:
    from costmodel.estimation import estimate

    opts = payload["options"]
    e = estimate(_scenario(payload), convention=opts["convention"],
                 flops_convention=opts["flops_convention"])
    return e.to_json(), None


def _validate(payload: dict[str, Any], progress: Progress) -> tuple[dict[str, Any], dict[str, Any]]:
    from lightcl.validate import validate

    s = _scenario(payload)
    v = validate(s, s.device, steps=payload["options"]["steps"], fake=payload["options"]["fake"],
                 progress=progress)
    m = v.measured
    flops = m.get("forward_flops", 0) + m.get("backward_flops", 0)
    return v.to_json(), {"peak_bytes": m.get("peak_bytes"), "step_flops": flops or None}


def _train(payload: dict[str, Any], progress: Progress) -> tuple[dict[str, Any], dict[str, Any]]:
    """A whole run, in memory (no checkpoint folder: on a cluster the worker's disk is not
    the driver's); on CUDA the allocator's peak over the run is measured too."""
    import torch

    from lightcl.data import load
    from lightcl.trainer import Trainer

    s = _scenario(payload)
    if s.device == "cuda":
        if not torch.cuda.is_available():
            raise CostclError("device cuda, but no CUDA device is visible here")
        torch.cuda.reset_peak_memory_stats()
    data = load(s, payload["options"]["data_root"])
    trainer = Trainer(s, data, s.device, None, payload["options"].get("checkpoint"),
                      payload["seed"], progress=progress)
    result = trainer.run().to_json()
    peak = int(torch.cuda.max_memory_allocated()) if s.device == "cuda" else None
    return result, {"peak_bytes": peak, "step_flops": None}


_JOBS = {"estimate": _estimate, "validate": _validate, "train": _train}
