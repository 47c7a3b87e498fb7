"""Trainable sets that are not a suffix, on resnet18 and vit_b_16: predicted vs the plain run.

Issue 10's acceptance: bias-only (TinyTL), norm-only (BatchNorm or LayerNorm),
class-token-only and every-other-block, each one plain SGD step on the CPU,
measured with torch.profiler's memory events on the second of two steps
(:func:`lightcl.validate.measure_cpu_plain_peak`; no dispatch mode in the run).
Prints the op-level peak and the allocator's peak with kernel scratch (oneDNN's
buffers inside an op, :mod:`costmodel.memory.kernel_scratch`), each predicted and
measured.

Run: python benchmarks/trainable_sets.py [--quick]
(--quick: resnet18 at 64x64, vit_b_16 at batch 1; the full run takes a few minutes.)
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from costmodel import engine, methods  # noqa: E402
from costmodel.estimation import estimate  # noqa: E402
from costmodel.scenario import Scenario  # noqa: E402
from lightcl.validate import measure_cpu_plain_peak  # noqa: E402

_BLOCK = re.compile(r"layer\d\.\d|encoder\.layers\.encoder_layer_\d+")


def trainable_sets(names: set[str], kinds: dict[str, str]) -> dict[str, frozenset[str]]:
    blocks = sorted({m.group(0) for n in names for m in [_BLOCK.match(n)] if m})
    out = {"bias-only": {n for n in names if n.endswith(".bias")},
           "norm-only": {n for n in names
                         if kinds.get(n.rsplit(".", 1)[0]) in ("BatchNorm2d", "LayerNorm")},
           "every-other-block": {n for n in names
                                 if any(n.startswith(b + ".") for b in blocks[::2])}}
    if "class_token" in names:
        out["class-token-only"] = {"class_token"}
    return {k: frozenset(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cases = [("resnet18", 64 if args.quick else 224, 8), ("torchvision:vit_b_16", 224,
                                                          1 if args.quick else 2)]
    print(f"{'model':22s} {'trainable set':18s} {'params':>6s} {'costcl B':>13s} "
          f"{'measured B':>13s} {'error':>8s} {'costcl+scr B':>13s} {'measured+scr':>13s} "
          f"{'error':>8s}")
    worst = worst_s = 0.0
    for model, side, batch in cases:
        s = methods.resolve(Scenario(model=model, input_size=(3, side, side), num_classes=10,
                                     batch_size=batch, tasks=1, device="cpu"))
        sm = engine.step_model(s, methods.get(s.method, s.impl))
        kinds = {n: type(m).__name__ for n, m in sm.network.named_modules()}
        for name, tset in trainable_sets(set(sm.all_params()), kinds).items():
            t = s.replace(trainable=tset)
            t0 = time.perf_counter()
            memory = estimate(t).memory
            got = measure_cpu_plain_peak(t)
            err = (memory.peak_bytes - got["peak_bytes"]) / got["peak_bytes"]
            with_scratch = got["peak_with_scratch_bytes"]
            err_s = (memory.peak_with_scratch_bytes - with_scratch) / with_scratch
            worst, worst_s = max(worst, abs(err)), max(worst_s, abs(err_s))
            print(f"{model.split(':')[-1] + f' {side}px b{batch}':22s} {name:18s} "
                  f"{len(tset):6d} {memory.peak_bytes:13,d} {got['peak_bytes']:13,d} {err:+8.3%} "
                  f"{memory.peak_with_scratch_bytes:13,d} {with_scratch:13,d} {err_s:+8.3%}"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"worst |error| at op level: {worst:.4%}; with kernel scratch: {worst_s:.4%}")


if __name__ == "__main__":
    main()
