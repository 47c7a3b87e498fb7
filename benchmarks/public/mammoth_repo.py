"""Mammoth's own training step at a later task (task index 1), measured on synthetic data, on CPU.

The public code (aimagelab/mammoth, or a checkout with the same layout) is
imported from ``--checkout``; nothing of it is copied here.  The run is built
the way Mammoth's ``main.py`` builds it: its own ``parse_args`` (model,
dataset ``seq-cifar10``, buffer, hyper-parameters given as Mammoth command-line
flags), then its own ``initialize`` (``get_dataset``, ``extend_args``,
``get_backbone``, ``get_model``: backbone, ContinualModel, optimizer, Buffer),
then the steps of ``utils/training.py::train``:

* task 0: ``dataset.get_data_loaders()`` (Mammoth's own, whose CIFAR-10 files
  are replaced by synthetic uint8 arrays of CIFAR's shape, see
  ``_synthetic_cifar``), ``meta_begin_task``, ONE ``meta_observe`` on a
  synthetic batch (so the buffer's tensors are made by the model's own
  ``add_data`` call), then the buffer is topped up to ``--buffer`` samples with
  Mammoth's own ``Buffer.add_data`` (same fields the model stores:
  er: examples+labels, der: examples+logits, derpp: all three), then
  ``meta_end_task`` (EWC's Fisher) and Mammoth's ``evaluate``;
* task 1: ``get_data_loaders()``, ``meta_begin_task`` (new optimizer; LwF's
  classifier warm-up and teacher logits), ``get_scheduler``, then two
  ``meta_observe`` calls (what the loop calls; it calls ``observe``) on
  ``torch.randn`` inputs, ``torch.rand`` not-augmented inputs (what ToTensor
  gives: [0, 1]) and labels in task 1's classes; LwF also gets the loader's
  ``logits`` extra field (rows of the teacher logits).  The SECOND call is
  measured.

Memory: :class:`lightcl.profiled.PlainRunProfile` entered before ``initialize``
(so backbone, model, optimizer, buffer, Fisher, teacher logits all count; the
synthetic raw image arrays are made before it and do not), read in the "step"
window around the second ``meta_observe``.  FLOPs: a fresh run (no profiler)
with :class:`lightcl.profiled.SplitFlopCounter` around the second call; the
buffer's Kornia augmentation is counted separately by a nested counter around
its ``forward``.

``--eval`` (meant for er): after the measured step, ``meta_end_task`` and
Mammoth's ``evaluate`` of the two tasks seen so far run in an "eval" window.

Seams (not Mammoth code changed, only replaced at import/IO):
* while ``datasets`` is imported, only ``datasets/seq_cifar10.py`` of the
  top-level dataset files is executed (others become empty modules):
  e.g. ``seq_8vision.py`` downloads CLIP weights at import time;
* torchvision's ``CIFAR10.__init__``/``_check_integrity`` are replaced for
  the run by a synthetic filler (no download); Mammoth's ``MyCIFAR10`` /
  ``TCIFAR10`` constructors run on top of it;
* ``--num_workers 0`` (loaders in this process), no W&B (``extend_args`` sets nowand), ``--n_epochs 1``
  (only LwF's warm-up loop uses it before the measured step).

    python benchmarks/public/mammoth_repo.py --checkout /work/ext/aimagelab+mammoth --case derpp [--batch 32] [--buffer 500]

The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import subprocess
import sys
import types

import numpy as np
import torch

from lightcl.profiled import PlainRunProfile, SplitFlopCounter

MIB = 2**20
CASES = ("sgd", "er", "der", "derpp", "ewc_on", "lwf")
# Hyper-parameters: Mammoth's utils/best_args.py, seq-cifar10, buffer 500 (lr is fixed
# to 0.03 for every case: it changes neither memory nor FLOPs).
CASE_FLAGS = {
    "sgd": [],
    "er": [],
    "der": ["--alpha", "0.3"],
    "derpp": ["--alpha", "0.2", "--beta", "0.5"],
    "ewc_on": ["--e_lambda", "10", "--gamma", "1.0"],
    "lwf": ["--alpha", "3.0", "--softmax_temp", "2.0"],
}
REHEARSAL = ("er", "der", "derpp")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkout", required=True)
    p.add_argument("--case", required=True, choices=CASES)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--buffer", type=int, default=500)
    p.add_argument("--minibatch", type=int, default=None,
                   help="replay batch; default: what Mammoth's extend_args sets")
    p.add_argument("--train-per-task", type=int, default=None,
                   help="synthetic train images per task (default 2 batches)")
    p.add_argument("--test-batches", type=int, default=2,
                   help="synthetic test batches per task")
    p.add_argument("--eval", action="store_true",
                   help="also measure end_task + evaluate() after the step")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


# --------------------------------------------------------------------------- import

def _import_mammoth(checkout: str) -> types.ModuleType:
    checkout = os.path.abspath(checkout)
    sys.path.insert(0, checkout)
    ds_dir = os.path.join(checkout, "datasets")
    skip = {f[:-3] for f in os.listdir(ds_dir)
            if f.endswith(".py") and f != "__init__.py"} - {"seq_cifar10"}
    real = importlib.import_module

    def guarded(name: str, package: str | None = None) -> types.ModuleType:
        if name.startswith("datasets.") and name[len("datasets."):] in skip:
            return sys.modules.setdefault(name, types.ModuleType(name))
        return real(name, package)

    cwd = os.getcwd()
    importlib.import_module = guarded
    try:
        import datasets  # noqa: F401  (registers seq-cifar10; chdirs to the checkout)
        import main as mammoth_main
    finally:
        importlib.import_module = real
    os.chdir(cwd)
    return mammoth_main


@contextlib.contextmanager
def _synthetic_cifar(n_train_per_class: int, n_test_per_class: int, seed: int):
    """torchvision's CIFAR10 constructor fills uint8 arrays of CIFAR's layout, no files."""
    from torchvision.datasets import CIFAR10
    rng = np.random.default_rng(seed)
    arrays = {}
    for train, n in ((True, n_train_per_class), (False, n_test_per_class)):
        targets = np.repeat(np.arange(10), n)
        data = rng.integers(0, 256, size=(len(targets), 32, 32, 3), dtype=np.uint8)
        arrays[train] = (data, targets.tolist())

    def fake_init(self, root, train=True, transform=None, target_transform=None,
                  download=False):  # noqa: ANN001
        self.root, self.train = root, train
        self.transform, self.target_transform = transform, target_transform
        data, targets = arrays[bool(train)]
        self.data, self.targets = data.copy(), list(targets)
        self.classes = [str(i) for i in range(10)]

    saved = CIFAR10.__init__, CIFAR10._check_integrity
    CIFAR10.__init__ = fake_init
    CIFAR10._check_integrity = lambda self: True
    try:
        yield
    finally:
        CIFAR10.__init__, CIFAR10._check_integrity = saved


# --------------------------------------------------------------------------- run

class _Marks:
    """record_function markers around Mammoth calls (no tensors): where the peak falls."""

    def __init__(self) -> None:
        self.n_fwd = 0
        self.n_get = 0

    def install(self, model) -> None:  # noqa: ANN001
        from torch.profiler import record_function
        net, buf = model.net, getattr(model, "buffer", None)
        fwd = net.forward
        marks = self

        def forward(*a, **k):
            marks.n_fwd += 1
            with record_function(f"mammoth:net.forward#{marks.n_fwd}"):
                return fwd(*a, **k)
        net.forward = forward
        if buf is not None:
            get = buf.get_data

            def get_data(*a, **k):
                marks.n_get += 1
                with record_function(f"mammoth:buffer.get_data#{marks.n_get}"):
                    return get(*a, **k)
            buf.get_data = get_data
            add = buf.add_data

            def add_data(*a, **k):
                with record_function("mammoth:buffer.add_data"):
                    return add(*a, **k)
            buf.add_data = add_data


def _batch(model, task: int, b: int, lwf_logits: torch.Tensor | None):  # noqa: ANN001
    lo, hi = model.dataset.get_offsets(task)
    inputs = torch.randn(b, 3, 32, 32)
    labels = torch.randint(lo, hi, (b,))
    not_aug = torch.rand(b, 3, 32, 32)
    extra = {}
    if lwf_logits is not None:  # what the loader's collate of the `logits` field hands over
        idx = torch.randint(0, lwf_logits.shape[0], (b,))
        extra["logits"] = lwf_logits[idx]
    # utils/training.py::train_single_epoch moves them (no-ops on CPU)
    inputs, labels = inputs.to(model.device), labels.to(model.device, dtype=torch.long)
    not_aug = not_aug.to(model.device)
    extra = {k: v.to(model.device) for k, v in extra.items()}
    return inputs, labels, not_aug, extra


def _fill_buffer(model, case: str, target: int, b: int) -> None:  # noqa: ANN001
    buf = model.buffer
    lo, hi = model.dataset.get_offsets(0)
    while buf.num_seen_examples < target:
        n = min(b, target - buf.num_seen_examples)
        x = torch.rand(n, 3, 32, 32)
        y = torch.randint(lo, hi, (n,))
        kw = {}
        if case in ("er", "derpp"):
            kw["labels"] = y
        if case in ("der", "derpp"):
            with torch.no_grad():
                kw["logits"] = model.net(x).data
        buf.add_data(examples=x, **kw)


def _run(m, args, case: str, b: int, flops: bool, do_eval: bool, prof=None) -> dict:  # noqa: ANN001
    """Build, do task 0 and the between-task work, then two steps of task 1."""
    from utils.schedulers import get_scheduler

    out: dict = {}
    model, dataset, margs = m.initialize(args)
    model.net.to(model.device)  # utils/training.py::train
    marks = _Marks()
    if prof is not None:
        marks.install(model)

    # ---- task 0
    model.net.train()
    dataset.get_data_loaders()
    model.meta_begin_task(dataset)
    inputs, labels, not_aug, extra = _batch(model, 0, b, None)
    model.meta_observe(inputs, labels, not_aug, epoch=0, **extra)
    del inputs, labels, not_aug, extra
    if case in REHEARSAL:
        _fill_buffer(model, case, margs.buffer_size, b)
    model.meta_end_task(dataset)
    dataset.evaluate(model, dataset)

    # ---- task 1
    model.net.train()
    dataset.get_data_loaders()
    model.meta_begin_task(dataset)
    get_scheduler(model, margs, reload_optim=True)
    lwf_logits = None
    if case == "lwf":
        lwf_logits = dataset.train_loader.dataset.logits
    batch1 = _batch(model, 1, b, lwf_logits)
    model.meta_observe(*batch1[:3], epoch=0, **batch1[3])
    del batch1
    inputs, labels, not_aug, extra = _batch(model, 1, b, lwf_logits)

    if flops:
        aug = model.transform
        aug_counter = SplitFlopCounter()
        orig_forward = aug.forward

        def counted_forward(*a, **k):
            with aug_counter:
                return orig_forward(*a, **k)
        aug.forward = counted_forward
        with SplitFlopCounter() as c:
            model.meta_observe(inputs, labels, not_aug, epoch=0, **extra)
        aug.forward = orig_forward
        out["forward_flops"] = c.counts.forward_flops - aug_counter.counts.forward_flops
        out["backward_flops"] = c.counts.backward_flops - aug_counter.counts.backward_flops
        out["aug_forward_flops"] = aug_counter.counts.forward_flops
        out["aug_backward_flops"] = aug_counter.counts.backward_flops
        return out

    assert prof is not None
    with prof.window("before_step"):
        pass
    with prof.window("step"):
        model.meta_observe(inputs, labels, not_aug, epoch=0, **extra)
    with prof.window("after_step"):
        pass
    del inputs, labels, not_aug, extra
    if do_eval:
        with prof.window("eval_end_task"):
            model.meta_end_task(dataset)
        with prof.window("before_eval"):
            pass
        with prof.window("eval"):
            dataset.evaluate(model, dataset)
        out["eval_test_batch_size"] = dataset.test_loaders[0].batch_size
        out["eval_test_batches_per_task"] = len(dataset.test_loaders[0])
    # facts about the objects, read after the step
    out["optimizer"] = {"class": type(model.opt).__name__,
                        **{k: model.opt.defaults.get(k) for k in
                           ("lr", "momentum", "weight_decay", "nesterov", "foreach", "fused")}}
    out["n_params"] = sum(p.numel() for p in model.net.parameters())
    out["param_bytes"] = sum(p.numel() * p.element_size() for p in model.net.parameters())
    out["buffer_bytes"] = 0
    if hasattr(model, "buffer"):
        for a in model.buffer.used_attributes:
            t = getattr(model.buffer, a)
            out.setdefault("buffer_tensors", {})[a] = {
                "shape": list(t.shape), "dtype": str(t.dtype), "device": str(t.device),
                "bytes": t.numel() * t.element_size()}
            out["buffer_bytes"] += t.numel() * t.element_size()
    if case == "ewc_on":
        out["ewc_fish"] = {"shape": list(model.fish.shape), "dtype": str(model.fish.dtype)}
        out["ewc_checkpoint"] = {"shape": list(model.checkpoint.shape)}
    if case == "lwf":
        lg = dataset.train_loader.dataset.logits
        out["lwf_teacher_logits"] = {"shape": list(lg.shape), "dtype": str(lg.dtype),
                                     "device": str(lg.device),
                                     "bytes": lg.numel() * lg.element_size()}
    out["transform"] = type(model.transform).__name__
    out["backbone"] = f"{margs.backbone} ({type(model.net).__module__}.{type(model.net).__name__})"
    out["minibatch_size"] = getattr(margs, "minibatch_size", None)
    out["n_epochs"] = margs.n_epochs
    out["model_args"] = {k: getattr(margs, k) for k in
                         ("lr", "alpha", "beta", "e_lambda", "gamma", "softmax_temp",
                          "batch_size", "minibatch_size", "buffer_size", "optim_mom",
                          "optim_wd", "optimizer", "backbone") if hasattr(margs, k)}
    return out


def _peak_location(prof: PlainRunProfile, window: str) -> str:
    """Name the events that hold the op-level peak of ``window`` (with their ordinal there)."""
    lo, hi = prof._windows[window]
    live_ops, best, t_best = 0, None, None
    for e in prof._events:
        if not e.scratch:
            live_ops += e.size
        if lo <= e.time_ns <= hi and (best is None or live_ops > best):
            best, t_best = live_ops, e.time_ns
        if e.time_ns > hi:
            break
    if t_best is None:
        return "?"
    alloc = torch._C._profiler._EventType.Allocation
    target = "costcl.window:" + window

    def find(ev):  # noqa: ANN001
        if ev.tag == alloc:
            return None
        if ev.name == target:
            return ev
        for ch in ev.children:
            got = find(ch)
            if got is not None:
                return got
        return None

    win = None
    for r in prof._prof.profiler.kineto_results.experimental_event_tree():
        win = find(r)
        if win is not None:
            break
    if win is None:
        return "?"
    path: list[str] = []
    node = win
    for _ in range(4):
        kids = [c for c in node.children if c.tag != alloc]
        hit = next((c for c in kids if c.start_time_ns <= t_best <= c.end_time_ns), None)
        if hit is None:
            break
        same = [c for c in kids if c.name == hit.name]
        path.append(f"{hit.name} [#{same.index(hit) + 1} of {len(same)}]")
        if hit.name.startswith("autograd::engine") or hit.name.startswith("Optimizer"):
            break
        node = hit
    frac = (t_best - lo) / max(1, hi - lo)
    return " > ".join(path) + f" (at {frac:.0%} of the window)"


def _commit(checkout: str) -> str:
    try:
        return subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    a = _parse()
    checkout = os.path.abspath(a.checkout)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    for k in ("WANDB_ENTITY", "WANDB_PROJECT"):  # extend_args then sets nowand=1
        os.environ.pop(k, None)
    m = _import_mammoth(checkout)
    logging.getLogger().setLevel(logging.WARNING)

    cmd = ["--model", a.case, "--dataset", "seq-cifar10", "--lr", "0.03",
           "--batch_size", str(a.batch), "--n_epochs", "1", "--seed", str(a.seed),
           "--non_verbose", "1", "--disable_log", "1", "--num_workers", "0",
           "--optimizer", "sgd", "--optim_mom", "0", *CASE_FLAGS[a.case]]
    if a.case in REHEARSAL:
        cmd += ["--buffer_size", str(a.buffer)]
        if a.minibatch is not None:
            cmd += ["--minibatch_size", str(a.minibatch)]
    n_train = a.train_per_task or 2 * a.batch
    n_test = a.test_batches * a.batch

    def margs() -> argparse.Namespace:
        return m.parse_args(list(cmd))

    notes: list[str] = []
    with _synthetic_cifar(n_train // 2, n_test // 2, a.seed):
        ns = margs()
        # extend_args (called inside initialize) sets minibatch_size = batch_size whenever
        # batch_size is given; --minibatch overrides that after it, through the model's args.
        orig_extend = m.extend_args

        def extend(args_, dataset):  # noqa: ANN001
            orig_extend(args_, dataset)
            if a.minibatch is not None and hasattr(args_, "minibatch_size"):
                args_.minibatch_size = a.minibatch
        m.extend_args = extend

        with PlainRunProfile() as prof:
            info = _run(m, ns, a.case, a.batch, flops=False, do_eval=a.eval, prof=prof)
        step = prof.peak("step")
        before = prof.peak("before_step").end_bytes
        after = prof.peak("after_step").end_bytes
        info["live_before_step_bytes"] = before
        info["live_after_step_bytes"] = after
        info["peak_location"] = _peak_location(prof, "step")
        if a.eval:
            ev = prof.peak("eval")
            info["eval_peak_op_level_bytes"] = ev.op_level_bytes
            info["eval_peak_with_scratch_bytes"] = ev.with_scratch_bytes
            info["live_before_eval_bytes"] = prof.peak("before_eval").end_bytes
            info["eval_peak_location"] = _peak_location(prof, "eval")

        flops = {}
        if not a.no_flops:
            # a fresh build: get_device's cache and the dataset's task counter are per build
            torch.manual_seed(a.seed)
            np.random.seed(a.seed)
            ns2 = margs()
            flops = _run(m, ns2, a.case, a.batch, flops=True, do_eval=False)

    if flops.get("aug_forward_flops"):
        notes.append(f"buffer augmentation kernels (Kornia, under no_grad) add "
                     f"{flops['aug_forward_flops']} FLOPs, left out of forward_flops")
    if a.case in REHEARSAL:
        notes.append(f"minibatch_size={info['minibatch_size']} (Mammoth's extend_args sets it to "
                     f"batch_size when batch_size is given)" if a.minibatch is None else
                     f"minibatch_size={info['minibatch_size']} (forced by --minibatch)")
    result = {
        "codebase": "mammoth",
        "commit": _commit(checkout),
        "case": a.case,
        "batch": a.batch,
        "buffer": a.buffer if a.case in REHEARSAL else 0,
        "step_peak_op_level_bytes": step.op_level_bytes,
        "step_peak_with_scratch_bytes": step.with_scratch_bytes,
        "forward_flops": flops.get("forward_flops"),
        "backward_flops": flops.get("backward_flops"),
        "notes": notes,
        "detail": {**info, "aug_forward_flops": flops.get("aug_forward_flops"),
                   "step_peak_op_level_mib": round(step.op_level_mib, 3),
                   "step_peak_with_scratch_mib": round(step.with_scratch_mib, 3),
                   "n_train_per_task": n_train, "n_test_per_task": n_test},
    }
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
