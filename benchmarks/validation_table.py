"""Predicted beside measured for every method's step (CPU, storage tracker on fake tensors).

Each method at its default scenario, batch 32 where it has none of its own
smaller.  Prints one row per method: predicted and measured peak (as a tracker
sees it), the error, the uninstrumented prediction, and whether the step's
FLOPs equal FlopCounterMode's.  The README quotes this table.
Run: python benchmarks/validation_table.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from costmodel import Scenario, methods  # noqa: E402
from lightcl.validate import validate  # noqa: E402

MIB = 2**20
EXTRA = {"pnn": {"setting": "task-il"}, "packnet": {"setting": "task-il"}}


def main() -> None:
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
