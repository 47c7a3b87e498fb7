"""Cold and warm starts of `costcl estimate`, `costcl report` and `costcl paper lightcl`,
beside `python -c "import torch, torchvision"`, each in a fresh process.

Acceptance (issue 14), with the cache filled:
* a repeated `costcl estimate` takes at most 0.1x the torch import;
* `costcl report` on the defaults takes at most 10 s;
* cold times are unchanged or better (cold: an empty cache; baseline: the cache
  off, COSTCL_NO_CACHE=1, which is what every run cost before the cache).

Every run gets a fresh temporary COSTCL_CACHE_DIR (cold) or the one a previous run
filled (warm).  Wall time is what a user waits; CPU time (user + system, of the
child) is printed beside it because a shared machine's load moves wall time.
The console script next to this Python is run directly (a pyenv shim adds its own
bash start-up), else ``python -m cli.main``.

Run: python benchmarks/warm_start.py [--repeat 5] [--skip-report] [--skip-paper] [--baseline]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ESTIMATE_RATIO = 0.1
REPORT_WARM_S = 10.0


@dataclass
class Timing:
    wall_s: float
    cpu_s: float

    def __str__(self) -> str:
        return f"{self.wall_s:7.2f} s wall {self.cpu_s:7.2f} s cpu"


def costcl() -> list[str]:
    script = Path(sys.executable).parent / "costcl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def run(cmd: list[str], cache_dir: Path | None, extra_env: dict[str, str] | None = None) -> Timing:
    env = dict(os.environ)
    env.pop("COSTCL_NO_CACHE", None)
    if cache_dir is not None:
        env["COSTCL_CACHE_DIR"] = str(cache_dir)
    env.update(extra_env or {})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return Timing(wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))


def median(timings: list[Timing]) -> Timing:
    return Timing(statistics.median(t.wall_s for t in timings),
                  statistics.median(t.cpu_s for t in timings))


def imports_torch(cmd: list[str], cache_dir: Path) -> bool:
    """Whether a run imports torch (a warm estimate must not)."""
    env = dict(os.environ, COSTCL_CACHE_DIR=str(cache_dir))
    env.pop("COSTCL_NO_CACHE", None)
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli.main", *cmd[len(costcl()):]],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return any(line.rstrip().endswith("| torch") for line in r.stderr.splitlines())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per estimate figure (median)")
    ap.add_argument("--skip-report", action="store_true")
    ap.add_argument("--skip-paper", action="store_true")
    ap.add_argument("--baseline", action="store_true",
                    help="also time report and paper with the cache off (slow: ~90 s each)")
    args = ap.parse_args()
    n = args.repeat
    estimate = costcl() + ["estimate"]
    work = Path(tempfile.mkdtemp(prefix="costcl-warm-start-"))
    fresh = iter(work / f"cache{i}" for i in range(10_000))
    rows: list[tuple[str, Timing]] = []

    def show(label: str, t: Timing) -> Timing:
        rows.append((label, t))
        print(f"{label:44s} {t}", flush=True)
        return t

    torch_import = show(f"python -c 'import torch, torchvision' (x{n})",
                        median([run([sys.executable, "-c", "import torch, torchvision"], None)
                                for _ in range(n)]))
    off = show(f"estimate, cache off (x{n})",
               median([run(estimate, None, {"COSTCL_NO_CACHE": "1"}) for _ in range(n)]))
    cold = show(f"estimate, cold: empty cache (x{n})",
                median([run(estimate, next(fresh)) for _ in range(n)]))
    filled = next(fresh)
    run(estimate, filled)
    warm = show(f"estimate, warm (x{n})", median([run(estimate, filled) for _ in range(n)]))
    no_torch = not imports_torch(estimate, filled)
    traces_only = next(fresh)
    run(estimate + ["--layers"], traces_only)
    trace_warm = show(f"estimate, warm traces, new flags (x{n})",
                      median([run(estimate + ["--batch-size", str(8 + i)], traces_only)
                              for i in range(n)]))

    report_cold = report_warm = report_off = paper_cold = paper_warm = paper_off = None
    if not args.skip_report:
        cache = next(fresh)
        report = costcl() + ["report", "--out"]
        if args.baseline:
            report_off = show("report, cache off", run(report + [str(work / "r0")], None,
                                                       {"COSTCL_NO_CACHE": "1"}))
        report_cold = show("report, cold", run(report + [str(work / "r1")], cache))
        report_warm = show("report, warm (x2)", median([run(report + [str(work / f"r{i}")], cache)
                                                       for i in (2, 3)]))
    if not args.skip_paper:
        cache = next(fresh)
        paper = costcl() + ["paper", "lightcl"]
        if args.baseline:
            paper_off = show("paper lightcl, cache off", run(paper, None, {"COSTCL_NO_CACHE": "1"}))
        paper_cold = show("paper lightcl, cold", run(paper, cache))
        paper_warm = show("paper lightcl, warm (x2)", median([run(paper, cache) for _ in range(2)]))

    print()
    ratio = warm.wall_s / torch_import.wall_s
    print(f"warm estimate / torch import: {ratio:.3f} wall, "
          f"{warm.cpu_s / torch_import.cpu_s:.3f} cpu (target <= {ESTIMATE_RATIO}): "
          f"{verdict(ratio <= ESTIMATE_RATIO)}; imports torch: {'no' if no_torch else 'YES'}")
    print(f"warm-trace estimate / cold estimate: {trace_warm.wall_s / cold.wall_s:.2f} wall")
    print(f"cold estimate / cache off: {cold.wall_s / off.wall_s:.2f} wall, "
          f"{cold.cpu_s / off.cpu_s:.2f} cpu (target: unchanged or better, ~1.0)")
    if report_warm is not None and report_cold is not None:
        print(f"warm report: {report_warm.wall_s:.2f} s (target <= {REPORT_WARM_S} s): "
              f"{verdict(report_warm.wall_s <= REPORT_WARM_S)}; "
              f"{report_cold.wall_s / report_warm.wall_s:.1f}x faster than cold")
        if report_off is not None:
            print(f"cold report / cache off: {report_cold.wall_s / report_off.wall_s:.2f} wall")
    if paper_warm is not None and paper_cold is not None:
        print(f"warm paper lightcl: {paper_warm.wall_s:.2f} s, "
              f"{paper_cold.wall_s / paper_warm.wall_s:.1f}x faster than cold")
        if paper_off is not None:
            print(f"cold paper / cache off: {paper_cold.wall_s / paper_off.wall_s:.2f} wall")
    print(f"(caches under {work}; delete it when done)")


if __name__ == "__main__":
    main()
