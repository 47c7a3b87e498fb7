"""Cold estimates of a sweep's scenarios on every core before ``sweep plan`` reads them.

A sweep's first plan traces every distinct scenario (the LightCL grid: 22 scenarios,
68 traces) and each trace is single-threaded Python.  Where the disk cache is on and
some scenarios are not in it, worker processes forked from this one (torch already
imported, nothing run on a device yet) compute those estimates, one scenario each at a
time, and leave them in the cache; the plan then reads every answer from it, in order,
as it would have computed them.  A worker's failure is left for the plan to meet and
report as it always does.  Without ``fork`` (Windows, macOS's default) or with one core,
nothing changes.

A worker lives only for the pool and keeps every trace it made, so it runs with the
cyclic garbage collector off (:mod:`costmodel.gc_pause` pauses it per estimate; the
collection after each pause was still a tenth of a worker's time).
"""
from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Sequence

from costmodel.scenario import Scenario


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_TODO: list[Scenario] = []
"""The scenarios of the pool being run: forked workers inherit them (a scenario's
read-only options do not pickle), and are handed indices."""


def _estimate_quietly(i: int) -> bool:
    from costmodel.estimation import estimate

    try:
        estimate(_TODO[i])
    except Exception:  # noqa: BLE001 - the plan computes it again and says what is wrong
        return False
    return True


def prewarm(scenarios: Sequence[Scenario], progress: Callable[[str], None] | None = None,
            workers: int | None = None) -> int:
    """Estimate the scenarios not yet in the disk cache on ``workers`` processes (default:
    every core); returns how many were computed."""
    from cli.sweep import scenario_key
    from costmodel import cache
    from costmodel.estimation import estimate_stored
    from costmodel.time_profile import for_device

    if cache.active_root() is None or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    distinct = {scenario_key(s): s for s in scenarios}
    profiles = {device: for_device(device) for device in {s.device for s in distinct.values()}}
    todo = [s for s in distinct.values() if not estimate_stored(s, profiles[s.device])]
    n = min(workers or cores(), len(todo))
    if n < 2:
        return 0
    say = progress or (lambda _: None)
    say(f"(tracing {len(todo)} scenarios on {n} cores)")
    _TODO[:] = todo
    try:
        with multiprocessing.get_context("fork").Pool(n, initializer=gc.disable) as pool:
            for done, _ in enumerate(pool.imap_unordered(_estimate_quietly, range(len(todo))), 1):
                say(f"(traced {done} of {len(todo)} scenarios)")
    finally:
        _TODO.clear()
    return len(todo)
