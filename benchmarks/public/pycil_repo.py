"""PyCIL's own training step at the last task, measured on synthetic data, on CPU.

The public code (G-U-N/PyCIL, or a checkout with the same layout) is imported
from ``--checkout``; nothing of it is copied here.  Its learner is built with
its own ``utils.factory.get_model`` and driven through its own
``incremental_train`` for every task, on its own ``DataManager`` whose CIFAR-100
download is replaced by synthetic uint8 arrays of the same shapes.  Only the
seams are replaced:

* for tasks before ``--task`` the learner's ``_train`` and
  ``build_rehearsal_memory`` are skipped; the exemplar memory is filled as the
  learner keeps it (``memory_size // total_classes`` uint8 images per seen
  class, host numpy), then its own ``after_task`` runs (teacher copies, weight
  alignment, frozen branches);
* at ``--task`` the module's ``DataLoader`` hands the learner's own loop
  (``_train`` -> ``_update_representation``, one epoch) an iterable of three
  synthetic batches ``(idx, inputs, targets)``; the second one is the measured
  step: the window opens when batch 2 is handed out and closes when batch 3 is
  asked for;
* the device is the CPU, one entry in ``args["device"]`` (no DataParallel).

Memory: :class:`lightcl.profiled.PlainRunProfile` around everything after the
data manager (learner, networks, teacher copies, optimizer, memory), read in the
"step" window.  FLOPs: a second, fresh build, with
:class:`lightcl.profiled.SplitFlopCounter` entered and left by the iterable
around batch 2 (not inside the profiler).

``--between`` (any case, meant for icarl) also lets the last task's
between-task work run as the learner runs it (``build_rehearsal_memory``:
``_reduce_exemplar`` and ``_construct_exemplar``, then trainer's
``eval_task``), on the synthetic data manager with its real sizes, with the
learner's DataLoaders at ``num_workers=0`` so that batches are made in this
process; each part is a profiler window, and numpy's host peak is read with
tracemalloc.

Run each case in its own process (the public code's top-level packages are
``utils``, ``models``, ``convs``)::

    python benchmarks/public/pycil_repo.py --checkout /work/ext/G-U-N+PyCIL --case icarl [--batch 128] [--task 9]

The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import torch

MIB = 2**20
CASES = ("icarl", "wa", "replay", "der", "memo", "podnet", "bic", "foster")
N_BATCHES = 3  # batch 2 is the measured step
SKIPPED = {"bic": ("_stage1_training", "_stage2_bias_correction")}
"""What a task before ``--task`` skips: the learner's training (default ``_train``)."""


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkout", required=True)
    p.add_argument("--case", required=True, choices=CASES)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--task", type=int, default=9)
    p.add_argument("--loop", type=int, default=1,
                   help="which pass over the last task's shuffled loaders holds the measured "
                        "step (bic: 1 training, 3 bias correction; foster: 1 boosting, "
                        "2 compression; podnet: 1 training, 2 balanced fine-tuning)")
    p.add_argument("--between", action="store_true",
                   help="also measure the last task's herding and eval_task")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--seed", type=int, default=1993)
    p.add_argument("--test-per-class", type=int, default=100,
                   help="synthetic test images per class (CIFAR-100: 100)")
    return p.parse_args()


# --------------------------------------------------------------------------- setup

def _args(checkout: str, case: str) -> dict:
    with open(os.path.join(checkout, "exps", f"{case}.json")) as f:
        args = json.load(f)
    own_net = {"memo": "memo_resnet32", "podnet": "cosine_resnet32"}
    args.update(model_name=case, dataset="cifar100", init_cls=10, increment=10,
                memory_size=2000, device=[torch.device("cpu")],
                fixed_memory=args.get("fixed_memory", False) if case == "foster" else False,
                convnet_type=own_net.get(case, "resnet32"))
    args["seed"] = args["seed"][0] if isinstance(args.get("seed"), list) else 1993
    if case == "memo":
        args["epochs"] = 1  # memo.py reads its epochs from args
    if case == "foster":  # foster.py reads its epochs from args; B0Inc10 as the others
        args.update(init_epochs=1, boosting_epochs=1, compression_epochs=1)
    return args


def _data_manager(seed: int, test_per_class: int = 100):
    """The public DataManager, its CIFAR-100 download replaced by synthetic uint8 arrays."""
    import utils.data as pdata
    import utils.data_manager as pdm

    class SyntheticCIFAR100(pdata.iCIFAR100):  # the public transforms, synthetic pixels
        def download_data(self) -> None:
            rng = np.random.default_rng(seed)
            self.train_data = rng.integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8)
            self.train_targets = np.repeat(np.arange(100), 500)
            self.test_data = rng.integers(0, 256, (100 * test_per_class, 32, 32, 3),
                                          dtype=np.uint8)
            self.test_targets = np.repeat(np.arange(100), test_per_class)

    pdm._get_idata = lambda name: SyntheticCIFAR100()
    return pdm.DataManager("cifar100", True, seed, 10, 10)


def _fill_memory(learner, dm) -> None:
    """The memory as the learner keeps it after a task: m uint8 images per seen class."""
    m = learner.samples_per_class
    data, targets = [], []
    for c in range(learner._total_classes):
        d, t = dm._select(dm._train_data, dm._train_targets, c, c + 1)
        data.append(d[:m])
        targets.append(np.full(m, c))
    learner._data_memory, learner._targets_memory = np.concatenate(data), np.concatenate(targets)
    learner._class_means = np.zeros((learner._total_classes, learner.feature_dim))


class MeasuredDone(Exception):
    """Raised when the measured pass is over: the rest of the task is not needed."""


class StepLoader:
    """DataLoader stand-in: three synthetic batches; batch 2 of the ``measured``-th pass
    over any of the learner's shuffled loaders (``passes`` counts them) is inside ``window``."""

    def __init__(self, batch: int, total: int, window, passes: list | None = None,  # noqa: ANN001
                 measured: int = 1, snapshot: object = None, stop: bool = False) -> None:
        self.batch, self.total, self.window = batch, total, window
        self.passes = passes if passes is not None else []
        self.measured, self.snapshot, self.stop = measured, snapshot, stop
        self.gen = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return N_BATCHES

    def __iter__(self):  # noqa: ANN204
        self.passes.append(self)
        mine = len(self.passes) == self.measured
        cm = None
        try:
            for k in range(1, N_BATCHES + 1):
                if k == 2 and mine:
                    cm = self.window()
                    cm.__enter__()
                elif cm is not None:
                    cm.__exit__(None, None, None)
                    cm = None
                x = torch.randn(self.batch, 3, 32, 32, generator=self.gen)
                y = torch.randint(0, self.total, (self.batch,), generator=self.gen)
                yield torch.arange(self.batch), x, y
        finally:
            if cm is not None:
                cm.__exit__(None, None, None)
        if mine and self.stop:
            raise MeasuredDone


class TinyTestLoader:
    """One batch of 8 for the epoch's test accuracy; made on demand, so nothing is held."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __len__(self) -> int:
        return 1

    def __iter__(self):  # noqa: ANN204
        g = torch.Generator().manual_seed(1)
        yield (torch.arange(8), torch.randn(8, 3, 32, 32, generator=g),
               torch.randint(0, self.total, (8,), generator=g))


def _no_workers(loader_cls):  # noqa: ANN001, ANN202
    def make(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        kw["num_workers"] = 0
        return loader_cls(*a, **kw)
    return make


def _skipped_train(learner, args: dict):  # noqa: ANN001, ANN202
    """What a task before ``--task`` does instead of training.  FOSTER's next task trains
    the previous task's compressed student (``_snet``): it is built as
    ``_feature_compression`` builds it (foster.py:289-301), and the gradients its last
    step leaves (every parameter the BKD loss reaches: the convnet but its unused fc,
    and ``fc``) are allocated, as after a real compression; task 0's network keeps
    those of its last step the same way.  Other learners skip it."""
    def skip(*a, **kw) -> None:  # noqa: ANN002, ANN003
        if args["model_name"] != "foster":
            return
        from utils.inc_net import FOSTERNet
        if learner._cur_task == 0:
            net = learner._network
        else:
            net = learner._snet = FOSTERNet(args, False)
            net.update_fc(learner._total_classes)
            net.convnets[0].load_state_dict(learner._network.convnets[0].state_dict())
            net.copy_fc(learner._network.oldfc)
        for name, p in net.named_parameters():
            if name.startswith("fc.") or (name.startswith("convnets.0.")
                                          and not name.startswith("convnets.0.fc.")):
                p.grad = torch.zeros_like(p)
    return skip


def run_learner(args: dict, dm, task: int, batch: int, window, between: bool = False,
                windows_between=None, on_last=None, measured: int = 1):  # noqa: ANN001
    """Build the learner with its own code and run task ``task`` through its own loop."""
    import torch.utils.data as tud
    from utils.factory import get_model

    learner = get_model(args["model_name"], args)
    mod = sys.modules[type(learner).__module__]
    for name in ("epochs", "ft_epochs"):  # podnet's balanced fine-tuning: ft_epochs
        if hasattr(mod, name):
            setattr(mod, name, 1)
    real_loader = mod.DataLoader
    skipped = SKIPPED.get(args["model_name"], ("_train",))
    passes: list = []
    for t in range(task + 1):
        last = t == task
        if not last:
            for name in skipped:
                setattr(learner, name, _skipped_train(learner, args))
            learner.build_rehearsal_memory = lambda data_manager, m: _fill_memory(learner, dm)
            mod.DataLoader = lambda ds, **kw: []
            learner.incremental_train(dm)
            learner.after_task()
            continue
        for name in (*skipped, "build_rehearsal_memory"):  # the class's own methods again
            delattr(learner, name)
        total = learner._known_classes + dm.get_task_size(t)

        def loader(ds, **kw):  # noqa: ANN001, ANN003, ANN202
            if kw.get("shuffle"):
                snapshot = ((ds.images.shape, int(ds.images.nbytes), kw.get("batch_size"),
                             kw.get("num_workers")),
                            (learner._data_memory, learner._targets_memory,
                             getattr(learner, "_class_means", None)))
                step_loader = StepLoader(batch, total, window, passes, measured, snapshot,
                                         stop=not between)
                learner._pycil_repo_loaders = [*getattr(learner, "_pycil_repo_loaders", []),
                                               step_loader]
                return step_loader
            if between:
                return real_loader(ds, **{**kw, "num_workers": 0})
            return TinyTestLoader(total)
        mod.DataLoader = loader
        import models.base as pbase
        pbase.DataLoader = _no_workers(tud.DataLoader)  # herding between passes (podnet)
        if between:
            for name in ("_reduce_exemplar", "_construct_exemplar"):
                fn = getattr(learner, name)
                setattr(learner, name, windows_between(name, fn))
        else:
            learner.build_rehearsal_memory = lambda data_manager, m: None
        if on_last is not None:
            on_last(learner)
        try:
            learner.incremental_train(dm)
        except MeasuredDone:
            pass
        if between:
            windows_between("eval_task", learner.eval_task)()
        measured_loader = passes[measured - 1] if len(passes) >= measured else None
        if measured_loader is None:
            raise SystemExit(f"--loop {measured}: the last task made only {len(passes)} passes")
        (learner._pycil_repo_train_set, learner._pycil_repo_memory) = measured_loader.snapshot
    mod.DataLoader = real_loader
    return learner


# --------------------------------------------------------------------------- peak location

def _locate_peak(prof, name: str) -> dict:
    """Where the op-level peak of window ``name`` falls: the enclosing named events."""
    lo, hi = prof._windows[name]
    live = 0
    best_t, best = None, None
    start_live = None
    series = []
    for e in prof._events:
        if e.time_ns < lo:
            if not e.scratch:
                live += e.size
            continue
        if start_live is None:
            start_live = live
        if e.time_ns > hi:
            break
        if not e.scratch:
            live += e.size
        series.append((e.time_ns, live))
        if best is None or live > best:
            best, best_t = live, e.time_ns
    roots = prof._prof.profiler.kineto_results.experimental_event_tree()
    chain: list[str] = []
    bwd_start = None
    marks: dict[str, tuple[int, int]] = {}

    def walk(ev, path):  # noqa: ANN001, ANN202
        nonlocal chain, bwd_start
        if ev.tag == torch._C._profiler._EventType.Allocation:
            return
        s, t = ev.start_time_ns, ev.end_time_ns
        if ev.name.startswith("pycil.") and lo <= s <= hi:
            marks.setdefault(ev.name, (s, t))
        if lo <= s <= hi and ev.name.startswith("autograd::engine::evaluate_function"):
            bwd_start = s if bwd_start is None else min(bwd_start, s)
        p = path
        if s <= best_t <= t:
            p = path + [ev.name]
            if len(p) > len(chain):
                chain = p
        for c in ev.children:
            walk(c, p)

    for r in roots:
        walk(r, [])

    def live_at(t: int) -> int | None:
        prev = start_live
        for tt, v in series:
            if tt > t:
                return prev
            prev = v
        return prev

    out = {"peak_op_level_bytes": best, "live_at_window_start_bytes": start_live,
           "peak_inside": [c for c in chain if not c.startswith("costcl.window")][:6]}
    if bwd_start is not None:
        out["live_at_backward_start_bytes"] = live_at(bwd_start)
        out["peak_before_backward_bytes"] = max(v for tt, v in series if tt < bwd_start)
        out["peak_during_or_after_backward_bytes"] = max(
            v for tt, v in series if tt >= bwd_start)
    for k, (s, t) in sorted(marks.items(), key=lambda kv: kv[1][0]):
        out[f"live_after_{k[len('pycil.'):]}_bytes"] = live_at(t)
    return out


def _mark_forwards(learner) -> None:
    """Profiler markers around the student's and the teacher's forward (hooks only)."""
    from torch.profiler import record_function

    def hook(net, label):  # noqa: ANN001, ANN202
        state: list = []

        def pre(module, inp):  # noqa: ANN001, ANN202
            cm = record_function(label)
            cm.__enter__()
            state.append(cm)

        def post(module, inp, out):  # noqa: ANN001, ANN202
            state.pop().__exit__(None, None, None)
        net.register_forward_pre_hook(pre)
        net.register_forward_hook(post)

    hook(learner._network, "pycil.student_forward")
    if learner._old_network is not None:
        hook(learner._old_network, "pycil.teacher_forward")


# --------------------------------------------------------------------------- main

def main() -> None:
    a = _parse()
    checkout = os.path.abspath(a.checkout)
    sys.path.insert(0, checkout)
    from lightcl.profiled import PlainRunProfile, SplitFlopCounter

    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args = _args(checkout, a.case)
    dm = _data_manager(a.seed, a.test_per_class)

    # ---- memory: the profile covers the learner's whole build and the loop
    between: dict = {}
    tm_peaks: dict = {}

    def windows_between(name, fn):  # noqa: ANN001, ANN202
        def wrapped(*x, **kw):  # noqa: ANN002, ANN003, ANN202
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            with PlainRunProfile.window(name):
                r = fn(*x, **kw)
            cur, peak = tracemalloc.get_traced_memory()
            tm_peaks[name] = {"host_python_numpy_peak_above_start_bytes": peak - before,
                              "host_python_numpy_kept_bytes": cur - before,
                              "seconds": round(time.perf_counter() - t0, 1)}
            return r
        return wrapped

    if a.between:
        tracemalloc.start()
    t0 = time.perf_counter()
    with PlainRunProfile() as prof:
        learner = run_learner(args, dm, a.task, a.batch, lambda: PlainRunProfile.window("step"),
                              between=a.between, windows_between=windows_between,
                              on_last=_mark_forwards, measured=a.loop)
    mem_seconds = time.perf_counter() - t0
    step = prof.peak("step")
    loc = _locate_peak(prof, "step")
    if a.between:
        for name in ("_reduce_exemplar", "_construct_exemplar", "eval_task"):
            r = prof.peak(name)
            between[name] = {"live_at_start_bytes": _locate_peak(prof, name)[
                                 "live_at_window_start_bytes"],
                             "op_level_bytes": r.op_level_bytes,
                             "with_scratch_bytes": r.with_scratch_bytes, **tm_peaks.get(name, {})}
        tracemalloc.stop()

    known, total = learner._known_classes, learner._total_classes
    net = learner._network
    params = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    teacher = learner._old_network
    teacher_params = sum(p.numel() for p in teacher.parameters()) if teacher is not None else 0
    mem_d, mem_t, cm = learner._pycil_repo_memory  # as they were when the step ran
    host = int(mem_d.nbytes + mem_t.nbytes + (cm.nbytes if cm is not None else 0))
    tshape, tbytes, tbatch, tworkers = learner._pycil_repo_train_set
    del learner, prof

    # ---- FLOPs: a fresh build, the counter around batch 2 only
    flops = {"forward_flops": None, "backward_flops": None}
    if not a.no_flops:
        torch.manual_seed(a.seed)
        counter = SplitFlopCounter()

        @contextlib.contextmanager
        def count():  # noqa: ANN202
            counter.__enter__()
            try:
                yield
            finally:
                counter.__exit__(None, None, None)
        run_learner(args, dm, a.task, a.batch, count, measured=a.loop)
        flops = {"forward_flops": int(counter.counts.forward_flops),
                 "backward_flops": int(counter.counts.backward_flops)}

    notes = [
        f"params {params} ({trainable} trainable), teacher copy params {teacher_params}",
        f"exemplar memory: {mem_d.shape} {mem_d.dtype} ({mem_d.nbytes} B) + targets "
        f"{mem_t.shape} {mem_t.dtype} ({mem_t.nbytes} B)"
        + (f" + _class_means {cm.shape} {cm.dtype} ({cm.nbytes} B)" if cm is not None else ""),
        f"the task's training set (new classes + memory, concatenated by get_dataset): "
        f"{tshape} uint8 host numpy ({tbytes} B); the learner's DataLoader asked for "
        f"batch_size={tbatch}, num_workers={tworkers} (replaced by {N_BATCHES} synthetic batches)",
        f"step window: {json.dumps(loc)}",
        f"memory run took {mem_seconds:.1f} s",
    ]
    out = {"codebase": "pycil", "commit": commit, "case": a.case, "batch": a.batch,
           "task": a.task, "loop": a.loop, "known_classes": known, "total_classes": total,
           "step_peak_op_level_bytes": step.op_level_bytes,
           "step_peak_with_scratch_bytes": step.with_scratch_bytes,
           "step_peak_op_level_mib": round(step.op_level_mib, 2),
           "step_peak_with_scratch_mib": round(step.with_scratch_mib, 2),
           **flops, "host_bytes": host, "notes": notes}
    if a.between:
        out["between_task"] = between
    print(json.dumps(out))


if __name__ == "__main__":
    main()
