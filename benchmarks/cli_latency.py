"""`costcl estimate` end to end against `python -c "import torch, torchvision"`, cold.

Target: no more than 1.5x.  Each command runs a few times; medians are compared.
The cache is off (``COSTCL_NO_CACHE=1``), so every run traces: this is the first
estimate of a scenario.  benchmarks/warm_start.py times the cached one.
Run: python benchmarks/cli_latency.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

TARGET_RATIO = 1.5


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    env = {**os.environ, "COSTCL_NO_CACHE": "1"}
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    costcl = shutil.which("costcl")
    estimate = [costcl, "estimate"] if costcl else [sys.executable, "-m", "cli.main", "estimate"]
    base = wall([sys.executable, "-c", "import torch, torchvision"], args.repeat)
    ours = wall(estimate, args.repeat)
    ratio = ours / base
    print(f"python -c 'import torch, torchvision': {base:.2f} s (median of {args.repeat})")
    print(f"costcl estimate:                       {ours:.2f} s (median of {args.repeat})")
    print(f"ratio: {ratio:.2f} (target <= {TARGET_RATIO}): {'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")


if __name__ == "__main__":
    main()
