"""Predicted beside measured for every method's step on the CPU.

Default: the storage tracker on fake tensors, each method at its default
scenario, batch 32 where it has none of its own smaller.  Prints one row per
method: predicted and measured peak (as a tracker sees it), the error, the
uninstrumented prediction, and whether the step's FLOPs equal FlopCounterMode's.

``--plain --batch 8``: the plain run instead (torch.profiler memory events on real
tensors, no dispatch mode in the step), for every implementation of every method
(costcl's and the public code's it reproduces), with the allocator's peak with
kernel scratch beside.  The README quotes both tables.
Run: python benchmarks/validation_table.py [--plain] [--batch N]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from costmodel import Scenario, methods  # noqa: E402
from lightcl.validate import validate  # noqa: E402

MIB = 2**20
EXTRA = {"pnn": {"setting": "task-il"}, "packnet": {"setting": "task-il"}}


def plain(batch: int) -> None:
    print(f"{'method':14} {'impl':9} {'model':15} {'predicted':>10} {'measured':>10} {'error':>8} "
          f"{'+scratch':>10} {'measured':>10} {'error':>8} {'FLOPs':>6}")
    worst = worst_s = 0.0
    for name in methods.catalog():
        for impl in methods.implementations(name):
            s = Scenario(method=name, impl=impl, batch_size=batch, **EXTRA.get(name, {}))
            try:
                v = validate(s, steps=1)
            except Exception as e:  # noqa: BLE001 - a benchmark reports and goes on
                print(f"{name:14} {impl:9} failed: {type(e).__name__}: {e}")
                continue
            m = v.measured
            exact = v.flops_error == 0
            worst = max(worst, abs(v.peak_error))
            worst_s = max(worst_s, abs(v.scratch_peak_error))
            print(f"{name:14} {impl:9} {v.predicted.scenario.model:15} "
                  f"{v.compared_peak_bytes / MIB:10.2f} {m['peak_bytes'] / MIB:10.2f} "
                  f"{100 * v.peak_error:+7.3f}% "
                  f"{v.predicted.memory.peak_with_scratch_bytes / MIB:10.2f} "
                  f"{m['peak_with_scratch_bytes'] / MIB:10.2f} {100 * v.scratch_peak_error:+7.3f}% "
                  f"{'exact' if exact else 'DIFF':>6}", flush=True)
    print(f"worst |peak error| against the plain run: {100 * worst:.3f}% op level, "
          f"{100 * worst_s:.3f}% with kernel scratch")


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="predicted beside measured, every method")
    ap.add_argument("--plain", action="store_true", help="the plain run (torch.profiler)")
    ap.add_argument("--batch", type=int, default=8, help="batch size with --plain")
    args = ap.parse_args()
    if args.plain:
        plain(args.batch)
        return
    print(f"{'method':14} {'model':15} {'batch':>5} {'predicted':>10} {'measured':>10} {'error':>8} "
          f"{'plain run':>10} {'FLOPs':>6}")
    for name in methods.catalog():
        kw = {"batch_size": 32, **EXTRA.get(name, {})}
        for variant in ({}, {"sparsity": 0.9}) if name == "lightcl" else ({},):
            # costcl's own steps: the public implementations are measured against the
            # public code itself (benchmarks/public_code.py)
            v = validate(Scenario(method=name, impl="costcl", **kw, **variant), fake=True)
            m = v.measured
            exact = (v.predicted.step.forward_flops, v.predicted.step.backward_flops) == (
                m["forward_flops"], m["backward_flops"])
            label = name + (" 0.9" if variant else "")
            print(f"{label:14} {v.predicted.scenario.model:15} {v.predicted.scenario.batch_size:5d} "
                  f"{v.compared_peak_bytes / MIB:10.2f} {m['peak_bytes'] / MIB:10.2f} "
                  f"{100 * v.peak_error:+7.3f}% {v.predicted.memory.peak_bytes / MIB:10.2f} "
                  f"{'exact' if exact else 'DIFF':>6}", flush=True)


if __name__ == "__main__":
    main()
