"""Pause Python's cyclic garbage collector while costcl traces and costs a step.

A trace allocates hundreds of thousands of small container objects (meta tensors,
records, tuples) that live as long as the trace does, so the collector, which runs
every 700 allocations, keeps promoting and rescanning them: on the LightCL table's
grid it was a third of the planning time (12.4 s of CPU, 8.2 s with it paused, on this
2-core machine).  What a trace lets go of dies by reference counting, which the
recorder's liveness facts rely on; any cycles are collected by the first collection
after the pause.  So a trace must make none that hold its tensors: a module imported
during one (torch._dynamo, by a Python reference's first call) left cycles that kept every
activation of an LSTM's first trace alive to the step's end, until ``stack`` had a meta
rule (:mod:`costmodel.trace.meta_rules`; tests/test_meta_outputs.py checks that cold
traces import no such module).  The collector's state is restored on exit, nested pauses included;
it is process-wide, so other threads of a host program see it paused meanwhile.
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
