"""How many step estimates per second after one trace (target: >= 50,000 for resnet18-cifar,
the step's seconds on the device profile included).

Sweeps batch size, optimizer and freeze point together, the way a fit search
or a design-space plot does.  Run: python benchmarks/estimate_throughput.py
"""
from __future__ import annotations

import itertools
import time

from costmodel import Scenario
from costmodel.fast import StepEstimator

TARGET_PER_S = 50_000


def main() -> None:
    t0 = time.perf_counter()
    est = StepEstimator(Scenario(model="resnet18-cifar"))
    trace_s = time.perf_counter() - t0
    freeze = [None, "layer2", "layer3", "layer3.1", "layer4", "linear"]
    opts = ["sgd", "sgd-momentum", "adam", "adamw"]
    batches = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256]
    configs = list(itertools.product(batches, opts, freeze))
    for b, o, f in configs:  # one plan per freeze point is built on first use
        est.step(b, o, f)
    n = 0
    t1 = time.perf_counter()
    while time.perf_counter() - t1 < 2.0:
        for b, o, f in configs:
            est.step(b, o, f)
        n += len(configs)
    rate = n / (time.perf_counter() - t1)
    print(f"trace + first plan: {trace_s:.2f} s")
    print(f"configurations swept: {len(configs)} (batch x optimizer x freeze point)")
    print(f"step estimates per second: {rate:,.0f} (target {TARGET_PER_S:,}): "
          f"{'PASS' if rate >= TARGET_PER_S else 'FAIL'}")


if __name__ == "__main__":
    main()
