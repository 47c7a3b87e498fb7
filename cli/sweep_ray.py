"""Running a sweep's points as Ray tasks (the optional extra ``costcl[ray]``).

Each point is one task of :func:`cli.sweep_jobs.run_point` with the resources
planning gave it: its CPUs, a GPU (or the share of one its predicted memory
takes, when the GPU's size is known) for a CUDA validate or train, and its
predicted host memory, so Ray's scheduler never starts two points where they do
not fit together.  Tasks are not retried: a point that dies (its worker killed for
memory) is recorded as failed with the reason, like any other failure.

Local by default (``ray.init()`` starts a one-machine cluster; each point carries
this process's own import folders, so a ``package.module:callable`` model that
imports here imports there); ``--address`` joins a running cluster, whose nodes
must have costcl installed (and any model factory, at the same path or installed).  A Ray already started in
this process (a test, a notebook) is used as it is and left running.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from costmodel.errors import CostclError


def installed() -> bool:
    """Is the extra installed?  (A test hides it with ``sys.modules["ray"] = None``.)"""
    try:
        import ray
    except ImportError:
        return False
    return ray is not None


def start(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start (or join) Ray unless this process already has; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                              "configure_logging": True}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CostclError(f"cannot start or reach {where}: {first}") from None
    return True


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address, self.num_cpus, self.started = address, num_cpus, False

    def prepare(self, planned: list[Any]) -> None:
        """Start Ray and check that every point fits some node, before anything runs."""
        import ray

        self.started = start(self.address, self.num_cpus)
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        for p in planned:
            r = p.resources
            if p.refused is None and not any(
                    n.get("CPU", 0) >= r.cpus and n.get("GPU", 0) >= r.gpus
                    and n.get("memory", 0) >= r.memory_bytes for n in nodes):
                self.close()
                gpu = f", {r.gpus:g} GPU" if r.gpus else ""
                if r.gpus and not any(n.get("GPU", 0) for n in nodes):
                    fix = 'the cluster has no GPU: join one that has (--address) or set device = "cpu"'
                elif not any(n.get("CPU", 0) >= r.cpus for n in nodes):
                    fix = "no node has that many CPUs: lower [job] cpus"
                else:
                    fix = "no node has that much free: add a larger node or lower the batch"
                raise CostclError(f"point {p.point.index + 1} ({p.point.label}) asks Ray for "
                                  f"{r.cpus} CPU{gpu} and {r.memory_bytes / 2**20:,.0f} MiB; {fix}")

    def run(self, todo: list[Any], record: Callable[[Any, dict[str, Any]], None]) -> None:
        """Submit every point, record each as it finishes; on Ctrl-C cancel the rest."""
        import ray

        from cli.sweep_jobs import one_line, run_point

        task = ray.remote(run_point)
        pending = {}
        for p in todo:
            r = p.resources
            ref = task.options(num_cpus=r.cpus, num_gpus=r.gpus, memory=r.memory_bytes,
                               max_retries=0, name=f"costcl sweep point {p.point.index + 1}"
                               ).remote(p.payload(self.name))
            pending[ref] = p
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    p = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the worker died: a failed point
                        outcome = {"status": "failed", "error": f"the Ray task died: {one_line(e)}",
                                   "result": None, "measured": None,
                                   "ran_on": {"engine": self.name}, "seconds": None}
                    record(p, outcome)
        finally:
            for ref in pending:  # interrupted: what runs stops at its next step (StopAtStep)
                ray.cancel(ref)
            self.close()

    def close(self) -> None:
        import ray

        if self.started:
            ray.shutdown()
            self.started = False
