"""The CUDA validation: predicted peak beside torch.cuda.max_memory_allocated().

The set of issue 5: sgd, er, derpp, ewc, lwf, lightcl (dense and sparsity 0.9)
and odil-freeze on resnet18-cifar at batch 32, plus resnet32-cifar (batch 128)
and torchvision resnet18 at 224x224 (batch 8) with plain fine-tuning.

Run on a machine with a GPU, from the repository root:
    python validation/run_cuda.py --out validation/cuda_results.json
It writes one JSON object: the device, the torch version, and per case the
validate() result (predicted estimate, measured peak, reserved bytes, FLOPs,
seconds per step, relative errors).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from costmodel import Scenario  # noqa: E402
from costmodel.files import atomic_write_text  # noqa: E402
from lightcl.validate import validate  # noqa: E402

CASES = [
    ("sgd", {}), ("er", {}), ("derpp", {}), ("ewc", {}), ("lwf", {}), ("lightcl", {}),
    ("lightcl", {"sparsity": 0.9}), ("odil-freeze", {}),
    ("sgd", {"model": "resnet32-cifar", "dataset": "cifar100", "batch_size": 128}),
    ("sgd", {"model": "resnet18", "dataset": "imagenet100", "batch_size": 8}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="validation/cuda_results.json")
    args = ap.parse_args()
    rows = []
    for method, kw in CASES:
        s = Scenario(method=method, **{"batch_size": 32, **kw})
        t = time.time()
        v = validate(s, device="cuda", steps=5)
        d = v.to_json()
        rows.append({"method": method, "options": kw, **d})
        m = d["measured"]
        print(f"{method:12} {json.dumps(kw):60} predicted {v.compared_peak_bytes / 2**20:9.2f} MiB "
              f"measured {(m['peak_bytes'] or 0) / 2**20:9.2f} MiB error "
              f"{100 * (v.peak_error or 0):+6.2f}% flops error {v.flops_error} ({time.time() - t:.0f}s)",
              flush=True)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "command": "python validation/run_cuda.py", "cases": rows}
    atomic_write_text(json.dumps(out, indent=2), Path(args.out))


if __name__ == "__main__":
    main()
