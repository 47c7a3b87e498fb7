"""The collector is paused while costcl traces, and left as it was found."""
from __future__ import annotations

import gc

from costmodel import Scenario, cache, engine, gc_pause
from costmodel.estimation import estimate


def test_a_pause_nests_and_restores_the_collector():
    assert gc.isenabled()
    with gc_pause.paused():
        assert not gc.isenabled()
        with gc_pause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause does not re-enable the outer one's
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_pause.paused():
            pass
        assert not gc.isenabled()  # a caller's own choice stands
    finally:
        gc.enable()


def test_an_estimate_runs_with_the_collector_paused_and_leaves_it_on():
    s = Scenario(method="lightcl", model="resnet18-cifar")
    engine._TRACES.clear()  # traced here, not found in this process's memory
    engine._WORKS.clear()
    with cache.disabled():
        before = gc.get_stats()[0]["collections"]
        estimate(s)
    assert gc.isenabled()
    # unpaused, the same estimate ran 127 young-generation collections here
    assert gc.get_stats()[0]["collections"] - before <= 3
