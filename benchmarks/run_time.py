"""Predicted against measured time of a whole short ``costcl train`` run (target: within 15%).

Trains one method on synthetic data with the bundled trainer (what ``costcl train
--data-root synthetic:N`` runs) and compares the wall time of the run (every task's
steps, the work between tasks, the evaluation after each task, the checkpoints)
with ``estimate``'s ``time`` block for the same schedule on that data's size.
The profile comes from ``--profile FILE`` or from calibrating first.

Run: python benchmarks/run_time.py [--method er] [--model resnet32-cifar]
     [--per-class 100] [--epochs 1] [--batch-size 32] [--profile FILE]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from costmodel import Scenario, engine, methods
from costmodel.estimation import trainable_set, variant_models
from costmodel.time_estimate import time_cost
from costmodel.time_profile import load
from lightcl.calibrate import calibrate
from lightcl.data import synthetic
from lightcl.trainer import Trainer

TARGET = 0.15


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="er")
    ap.add_argument("--model", default="resnet32-cifar")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--profile", default=None)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f} at the start")
    profile = load(args.profile) if args.profile else calibrate("cpu")
    name, _, impl = args.method.partition("@")
    s = methods.resolve(Scenario(method=name, impl=impl or None, model=args.model,
                                 epochs=args.epochs, batch_size=args.batch_size))
    data = synthetic(s, per_class=args.per_class)
    method = methods.get(s.method, s.impl)
    models = variant_models(s, method)
    plans = {v: sm.plan(trainable_set(s, method, sm, v), False, s.device,
                        (s.batch_size, method.replay_batch(s)))
             for v, sm in models.items()}
    per_task = len(data.task_indices(data.train, 0))
    test_per_task = len(data.task_indices(data.test, 0))
    predicted = time_cost(s, method, models, plans, profile, images_per_task=per_task,
                          test_images_per_task=test_per_task)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(s, data, "cpu", Path(out) / "run")
        t = time.perf_counter()
        result = trainer.run()
        wall = time.perf_counter() - t
    train = sum(task.seconds for task in result.tasks)
    total = predicted.run_train_s + predicted.evaluation_s
    err = (total - wall) / wall
    print(f"{s.method}@{s.impl} on {s.model}, {s.tasks} tasks of {per_task} images, "
          f"{args.epochs} epoch(s), batch {s.batch_size}; profile {profile.name}")
    print(f"steps (trainer's task seconds): predicted {predicted.run_train_s:.1f} s, "
          f"measured {train:.1f} s")
    print(f"whole run (wall): predicted {total:.1f} s ({predicted.run_train_s:.1f} training, "
          f"{predicted.evaluation_s:.1f} evaluation), measured {wall:.1f} s: {100 * err:+.1f}% "
          f"(target {100 * TARGET:.0f}%): {'PASS' if abs(err) <= TARGET else 'FAIL'}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    engine._TRACES.clear()


if __name__ == "__main__":
    main()
