"""Predicted against measured seconds per step, every trainable method, after one calibration.

Calibrates this machine once (``costcl calibrate``'s micro-benchmarks; or reads
``--profile FILE``), then for each batch size builds every trainable method's real
step (``lightcl.runner``: the step ``costcl validate`` and ``costcl train`` run),
warms each up, and times them interleaved: round after round, one step of each
method on a fresh random batch, so a slow minute of a shared machine falls on all
of them alike.  Measured is the median over the rounds.  Targets: median absolute
error <= 10%, worst <= 25%.

Run: python benchmarks/step_time.py [--batches 8,32,128] [--rounds 5] [--methods a,b]
     [--model NAME] [--profile FILE] [--out PROFILE.toml]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from costmodel import Scenario, methods
from costmodel.estimation import estimate
from costmodel.time_profile import load
from lightcl.calibrate import calibrate
from lightcl.runner import build_runner
from lightcl.step_timing import measured_medians

MEDIAN_TARGET, WORST_TARGET = 0.10, 0.25


def trainable_methods() -> list[str]:
    """Every catalog method the trainer runs: its default implementation, else costcl's."""
    out = []
    for name in methods.catalog():
        impls = methods.implementations(name)
        default = methods.get(name)
        if default.trains:
            out.append(name)
        elif "costcl" in impls and impls["costcl"].trains:
            out.append(f"{name}@costcl")
    return out


def scenario(label: str, batch: int, model: str | None) -> Scenario:
    name, _, impl = label.partition("@")
    return Scenario(method=name, impl=impl or None, batch_size=batch, model=model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="8,32,128")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--methods", default=None)
    ap.add_argument("--model", default=None, help="one model for all (default: each method's)")
    ap.add_argument("--profile", default=None, help="a profile file instead of calibrating")
    ap.add_argument("--out", default=None, help="write the calibrated profile here")
    args = ap.parse_args()
    labels = args.methods.split(",") if args.methods else trainable_methods()
    batches = [int(b) for b in args.batches.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    if args.profile:
        profile = load(args.profile)
    else:
        t = time.perf_counter()
        profile = calibrate("cpu")
        print(f"calibrated in {time.perf_counter() - t:.1f} s")
        if args.out:
            from pathlib import Path

            from costmodel.files import atomic_write_text
            atomic_write_text(profile.to_toml(), Path(args.out))
    rows = []
    for b in batches:
        runners, predicted = {}, {}
        for label in labels:
            s = scenario(label, b, args.model)
            predicted[label] = estimate(s, profile=profile).time.step_s
            runners[label] = build_runner(s, "cpu")
        # one warm-up round (optimizer state, allocator, kernel choice), then the rounds
        medians = measured_medians(runners, args.rounds, warmup=1)
        for label in labels:
            measured = medians[label]
            err = (predicted[label] - measured) / measured
            rows.append((label, runners[label].scenario.model, b, predicted[label], measured, err))
            print(f"  {label:<22} {runners[label].scenario.model:<16} b{b:<4} predicted "
                  f"{predicted[label]:8.4f} s  measured {measured:8.4f} s  {100 * err:+6.1f}%",
                  flush=True)
        del runners
    print()
    print("| method | model | batch | predicted s | measured s | error |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, model, b, p, m, e in rows:
        print(f"| {label} | {model} | {b} | {p:.4f} | {m:.4f} | {100 * e:+.1f}% |")
    errors = [abs(r[5]) for r in rows]
    med, worst = statistics.median(errors), max(errors)
    print()
    print(f"median absolute error {100 * med:.1f}% (target {100 * MEDIAN_TARGET:.0f}%): "
          f"{'PASS' if med <= MEDIAN_TARGET else 'FAIL'}")
    print(f"worst absolute error {100 * worst:.1f}% (target {100 * WORST_TARGET:.0f}%): "
          f"{'PASS' if worst <= WORST_TARGET else 'FAIL'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    sys.exit(0 if med <= MEDIAN_TARGET and worst <= WORST_TARGET else 1)


if __name__ == "__main__":
    main()
