"""Predicted peak memory beside MemTracker's, for the acceptance configurations.

Four models, trained fully and from a late freeze point, three optimizers: 24
configurations, on fake CPU tensors (MemTracker's numbers are byte-identical on
real ones).  Prints one row each; the README quotes this table.
Run: python benchmarks/memtracker_agreement.py
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from costmodel import Scenario  # noqa: E402
from costmodel.estimation import estimate  # noqa: E402
from tests.conftest import measured_memory  # noqa: E402

CASES = [("resnet18-cifar", (3, 32, 32), 32, "layer4"), ("resnet32-cifar", (3, 32, 32), 128, "stage_3"),
         ("resnet18", (3, 224, 224), 8, "layer4"), ("mobilenet_v2", (3, 224, 224), 8, "features.14")]
MIB = 2**20


def main() -> None:
    print(f"{'model':15} {'batch':>5} {'trains':>12} {'optimizer':>12} {'MemTracker':>11} "
          f"{'costcl':>9} {'error':>7} {'instrumented':>13}")
    worst = 0.0
    for model, size, batch, freeze in CASES:
        for frozen in (None, freeze):
            for opt in ("sgd", "sgd-momentum", "adam"):
                s = Scenario(model=model, input_size=size, num_classes=10, batch_size=batch,
                             train_from=frozen, optimizer=opt)
                e, seen = estimate(s), estimate(s, instrumented=True)
                ref = measured_memory(e).peak_bytes
                err = (e.memory.peak_bytes - ref) / ref
                worst = max(worst, abs(err))
                print(f"{model:15} {batch:>5} {('from ' + frozen) if frozen else 'all':>12} {opt:>12} "
                      f"{ref / MIB:>11.2f} {e.memory.peak_bytes / MIB:>9.2f} {100 * err:>+6.2f}% "
                      f"{seen.memory.peak_bytes - ref:>+10d} B")
    print(f"worst relative error (uninstrumented prediction): {100 * worst:.2f}%")


if __name__ == "__main__":
    main()
