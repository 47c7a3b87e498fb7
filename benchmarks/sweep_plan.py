"""How long `costcl sweep plan` takes on the LightCL table's grid.

The grid: the table's 11 rows (10 methods, LightCL dense and at sparsity 0.9) x its
2 datasets (Split CIFAR-10, 5 tasks x 50 epochs; Split TinyImageNet, 10 x 100) x 3
seeds = 66 points, in the table's setting (ResNet-18, batch 32, 15 stored samples and
a replay batch of 15, 10% held out).  The job is ``validate``: five of the table's
methods (joint, pnn, fdr and SparCL's two) are costed and validated but not trained
by costcl's trainer, so a ``train`` job on this grid is refused in one line, by design.

    python benchmarks/sweep_plan.py            # warm: the traces are in the cache
    python benchmarks/sweep_plan.py --cold     # a fresh, empty cache folder first

Prints the seconds of each `costcl sweep plan` run (a fresh process each, as a user
types it) and the number of points it listed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = """
[base]
model = "resnet18-cifar"
batch_size = 32
holdout = 0.1
buffer_size = 15
optimizer = "sgd"

[axes]
method = [
  "joint", "sgd", "ewc", {method = "pnn", setting = "task-il"},
  {method = "fdr", replay_batch = 15}, {method = "er", replay_batch = 15},
  {method = "derpp", replay_batch = 15},
  {method = "sparcl-er", replay_batch = 15, sparsity = 0.9},
  {method = "sparcl-derpp", replay_batch = 15, sparsity = 0.9},
  "lightcl", {method = "lightcl", sparsity = 0.9},
]
dataset = [{dataset = "cifar10", tasks = 5, epochs = 50},
           {dataset = "tinyimagenet", tasks = 10, epochs = 100}]
seed = [0, 1, 2]

[job]
kind = "validate"
"""


def plan_seconds(grid: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cli.main", "sweep", "plan", str(grid), "--json"],
                       capture_output=True, text=True, env=env,
                       cwd=Path(__file__).resolve().parents[1])
    seconds = time.perf_counter() - start
    if r.returncode:
        raise SystemExit(r.stderr)
    return seconds, len(json.loads(r.stdout)["points"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cold", action="store_true", help="start from an empty cache folder")
    ap.add_argument("--repeat", type=int, default=2, help="warm runs after the first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "lightcl_grid.toml"
        grid.write_text(GRID)
        env = dict(os.environ)
        if args.cold:
            env["COSTCL_CACHE_DIR"] = str(Path(tmp) / "cache")
        first, n = plan_seconds(grid, env)
        print(f"{n} points; first run ({'cold cache' if args.cold else 'cache as found'}): "
              f"{first:.2f} s")
        for i in range(args.repeat):
            again, _ = plan_seconds(grid, env)
            print(f"warm run {i + 1}: {again:.2f} s")


if __name__ == "__main__":
    main()
