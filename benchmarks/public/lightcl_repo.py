"""Measure the LightCL repository's own code (INV-WZQ/LightCL) on synthetic data.

    python benchmarks/public/lightcl_repo.py --checkout PATH [--sparse] [--flops]

PATH is a local checkout of https://github.com/INV-WZQ/LightCL (nothing of it is
committed here or downloaded).  LightCL.py runs its whole experiment at import
time (argument parsing, CIFAR download, training), so this script does not
import it: it compiles the file, keeps only its function definitions (train,
test, get_forgetting_info, my_train, my_process, get_pruner, get_model) and runs
those, unchanged, with the repository's own models.py, prune.py and utils.py, on
synthetic loaders of 32-image batches (the repository's batch size, test batch
32).  On a machine without CUDA, ``Tensor.cuda`` is made the identity: the code
moves every batch with ``.cuda(non_blocking=True)``.  The pretrained checkpoint
is not public in a usable form; its load is skipped (random init), which
changes no size.

Two tasks run with ``--epochs`` epochs each (task 0, then task 1 with the
references FS, the feature-pattern loss and the evaluation every 5 epochs).
Measured, on the CPU allocator through torch.profiler memory events (the plain
run, no dispatch mode):

* ``step``: the second iteration of task 1's my_train loop (from handing out
  the second batch to asking for the third);
* ``run``: everything from building the model to the end of task 1, the
  evaluations included.

With ``--flops``, the same iteration runs under FlopCounterMode's formulas
instead (forward and backward apart).  The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from lightcl.profiled import PlainRunProfile, SplitFlopCounter  # noqa: E402

FUNCTIONS = ("train", "test", "get_forgetting_info", "my_train", "my_process", "get_pruner",
             "get_model")
BATCH = 32


class SyntheticLoader:
    """A DataLoader stand-in: ``batches`` shuffled batches of ``batch`` random images per pass.

    ``on_batch(pass_index, batch_index)`` runs as each batch is handed out, so a
    measurement window can open and close around one iteration of the code's loop.
    """

    def __init__(self, batches: int, classes: tuple[int, int], on_batch=None,  # noqa: ANN001
                 batch: int = BATCH) -> None:
        self.batches, self.classes, self.on_batch, self.batch = batches, classes, on_batch, batch
        self.dataset = range(batches * batch)
        self.passes = 0

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):  # noqa: ANN204
        index = self.passes
        self.passes += 1
        for b in range(self.batches + 1):
            if self.on_batch is not None:
                self.on_batch(index, b)
            if b == self.batches:
                return
            yield (torch.randn(self.batch, 3, 32, 32),
                   torch.randint(self.classes[0], self.classes[1], (self.batch,)))


class Window:
    """Opens a measurement on the second batch of task 1's training pass, closes it on the third."""

    def __init__(self, flops: bool) -> None:
        self.flops, self._ctx = flops, None
        self.counter = SplitFlopCounter() if flops else None

    def __call__(self, pass_index: int, batch: int) -> None:
        if pass_index != 1:  # pass 0 is next(iter(...)) for the stored samples
            return
        if batch == 1:
            self._ctx = self.counter if self.flops else PlainRunProfile.window("step")
            self._ctx.__enter__()
        elif batch == 2 and self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None


def load_functions(checkout: Path, namespace: dict) -> None:
    """Compile LightCL.py and run only its function definitions into ``namespace``."""
    tree = ast.parse((checkout / "LightCL.py").read_text())
    tree.body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in FUNCTIONS]
    exec(compile(tree, str(checkout / "LightCL.py"), "exec"), namespace)  # noqa: S102


def run(checkout: Path, sparse: bool, epochs: int, train_batches: int, test_batches: int,
        flops: bool, batch: int = BATCH) -> dict:
    sys.path.insert(0, str(checkout))
    torch.Tensor.cuda = lambda self, *a, **k: self  # the code calls .cuda() on every batch
    import models
    import prune
    import utils
    torch.manual_seed(0)
    window = Window(flops)
    ns: dict = {"__name__": "lightcl_repo"}
    for mod in (utils, prune, models):
        ns.update({k: v for k, v in vars(mod).items() if not k.startswith("__")})
    from torch import nn, optim
    from torch.nn import functional as F
    ns.update(torch=torch, nn=nn, optim=optim, F=F, init=nn.init,
              tqdm=lambda it, **k: it, print=lambda *a, **k: None)
    tasks, til = 2, 2
    ns.update(args=types.SimpleNamespace(Sparse=sparse, pretrain=True), Learning_rate=0.01,
              Beta=2e-4, Buffer_num=15, Ratio=0.15, Dataset_name="seq-cifar10",
              TIL_interval=til, device=torch.device("cpu"), num_task=tasks, epochs=epochs,
              pretrain_model="<not loaded>")
    ns["train_loader"] = {t: SyntheticLoader(train_batches, (t * til, (t + 1) * til),
                                             window if t == 1 else None, batch)
                          for t in range(tasks)}
    ns["test_loader"] = {t: SyntheticLoader(test_batches, (t * til, (t + 1) * til))
                         for t in range(tasks)}
    load_functions(checkout, ns)
    real_load = torch.load
    real_load_state = nn.Module.load_state_dict
    torch.load = lambda *a, **k: None  # the pretrained file: random init instead
    nn.Module.load_state_dict = lambda self, sd, *a, **k: None if sd is None else real_load_state(self, sd, *a, **k)
    out = {"codebase": "lightcl", "case": "lightcl-sparse" if sparse else "lightcl-dense",
           "commit": subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"],
                                    capture_output=True, text=True).stdout.strip(),
           "batch": batch, "buffer": 15, "epochs": epochs, "train_batches": train_batches,
           "test_batches": test_batches}
    try:
        if flops:
            model = ns["get_model"]()
            ns["my_process"](model, ns["get_pruner"](model))
            out.update(forward_flops=window.counter.counts.forward_flops,
                       backward_flops=window.counter.counts.backward_flops)
        else:
            with PlainRunProfile() as prof:
                with PlainRunProfile.window("run"):
                    model = ns["get_model"]()
                    ns["my_process"](model, ns["get_pruner"](model))
            step, whole = prof.peak("step"), prof.peak("run")
            out.update(step_peak_op_level_bytes=step.op_level_bytes,
                       step_peak_with_scratch_bytes=step.with_scratch_bytes,
                       run_peak_op_level_bytes=whole.op_level_bytes,
                       run_peak_with_scratch_bytes=whole.with_scratch_bytes)
    finally:
        torch.load, nn.Module.load_state_dict = real_load, real_load_state
        torch.autograd.set_detect_anomaly(False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkout", type=Path, required=True, help="local checkout of INV-WZQ/LightCL")
    ap.add_argument("--sparse", action="store_true", help="the repository's --Sparse run")
    ap.add_argument("--flops", action="store_true", help="count FLOPs instead of memory")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-batches", type=int, default=3)
    ap.add_argument("--test-batches", type=int, default=2)
    ap.add_argument("--batch", type=int, default=BATCH,
                    help="training images a batch (the repository's: 32; its test batch stays "
                         "32); below the 15 stored samples, input[:Buffer_num] keeps the whole "
                         "first batch")
    a = ap.parse_args()
    if not (a.checkout / "LightCL.py").is_file():
        sys.exit(f"error: {a.checkout} has no LightCL.py; pass a checkout of INV-WZQ/LightCL")
    print(json.dumps(run(a.checkout, a.sparse, a.epochs, a.train_batches, a.test_batches, a.flops,
                         a.batch)))


if __name__ == "__main__":
    main()
