"""The bundled continual-learning trainer: a whole CL run of one method.

It runs the method's schedule (the same phases the engine costs) with the
method's own step function and its between-task work, keeps the exemplars the
method declares (a Mammoth-style reservoir or a PyCIL-style per-class memory),
evaluates after every task as LightCL does (TIL: argmax inside the task's
logit slice; CIL: argmax over all logits; both averaged over the tasks seen),
and writes a checkpoint after every task (:mod:`lightcl.checkpoint`: data only,
checksummed, staged with results.json and renamed into place together), so an
interrupted run resumes from the last finished task with ``resume=True`` and ends
exactly as the uninterrupted run would: the checkpoint holds every random
generator the run draws from, and a resume with another scenario, seed or data
is refused.
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from costmodel import engine, methods
from costmodel.errors import CostclError
from costmodel.estimation import trainable_set
from costmodel.methods.base import Method, Phase
from costmodel.models.registry import head_name
from costmodel.scenario import Scenario
from lightcl import checkpoint as ckpt
from lightcl.context import TrainContext
from lightcl.data import TaskData
from lightcl.optim import build_optimizer
from lightcl.runner import build_network

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"


@dataclass
class TaskResult:
    task: int
    seconds: float
    images: int
    images_per_s: float
    loss: float
    cil: list[float]
    til: list[float]

    @property
    def cil_mean(self) -> float:
        return sum(self.cil) / len(self.cil)

    @property
    def til_mean(self) -> float:
        return sum(self.til) / len(self.til)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"cil_mean": self.cil_mean, "til_mean": self.til_mean}


@dataclass
class RunResult:
    scenario: Scenario
    tasks: list[TaskResult] = field(default_factory=list)
    class_order: list[int] = field(default_factory=list)
    device: str = "cpu"

    def to_json(self) -> dict[str, Any]:
        last = self.tasks[-1] if self.tasks else None
        return {"scenario": self.scenario.to_json(), "device": self.device,
                "class_order": self.class_order, "tasks": [t.to_json() for t in self.tasks],
                "final": {"cil": last.cil_mean, "til": last.til_mean} if last else None}


def load_weights(net: nn.Module, path: str) -> None:
    """A checkpoint's weights (``weights_only=True``); the head may differ (it is re-initialised).

    ``path`` is a state dict saved with ``torch.save``, or a costcl checkpoint.pt
    (checked: its checksum must match)."""
    fix = "give --checkpoint a state dict saved with torch.save, or a costcl checkpoint.pt"
    state = ckpt.load_file(path, fix)
    if isinstance(state, dict) and ckpt.FORMAT_KEY in state:
        state = ckpt.verify(state, path, fix)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CostclError(f"checkpoint {path!r} holds no state dict (names to tensors); {fix}")
    own = net.state_dict()
    head = head_name(net) or ""
    missing = sorted(k for k in own if k not in state and not k.startswith(head + "."))
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(k for k in own if k in state and state[k].shape != own[k].shape
                   and not k.startswith(head + "."))
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else ""]
        raise CostclError(f"checkpoint {path!r} is for another architecture: "
                          f"{'; '.join(p for p in parts if p)} keys")
    keep = {k: v for k, v in state.items() if own[k].shape == v.shape}
    net.load_state_dict(keep, strict=False)
    if len(keep) < len(own):  # a head of another width: start it afresh (Xavier), as LightCL does
        head_module = net.get_submodule(head)
        nn.init.xavier_uniform_(head_module.weight)
        nn.init.zeros_(head_module.bias)


class _Memory:
    """Exemplars kept between tasks: a reservoir (Mammoth) or per-class (PyCIL)."""

    def __init__(self, s: Scenario, method: Method, device: str) -> None:
        self.kind, self.fields, self.capacity = method.memory, method.reservoir, s.buffer_size
        self.device, self.seen = device, 0
        self.tensors: dict[str, torch.Tensor] = {}
        self.count = 0
        self.images: torch.Tensor | None = None  # per-class: uint8 images and labels
        self.labels: torch.Tensor | None = None

    def add_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """Reservoir sampling, one example at a time (Mammoth's Buffer.add_data)."""
        n = next(iter(batch.values())).shape[0]
        for i in range(n):
            if self.count < self.capacity:
                slot = self.count
                self.count += 1
            else:
                slot = int(torch.randint(0, self.seen + 1, (1,)))
                slot = slot if slot < self.capacity else -1
            self.seen += 1
            if slot < 0:
                continue
            for k in self.fields:
                if k not in batch:  # a field this configuration does not keep
                    continue
                v = batch[k][i].detach()
                if k not in self.tensors:
                    self.tensors[k] = torch.zeros((self.capacity, *v.shape), dtype=v.dtype,
                                                  device=self.device)
                self.tensors[k][slot] = v

    def views(self) -> dict[str, torch.Tensor]:
        return {k: v[: self.count] for k, v in self.tensors.items()} if self.count else {}

    def update_per_class(self, data: TaskData, classes_seen: int) -> None:
        """An even share of the capacity per seen class, chosen at random."""
        per_class = self.capacity // max(classes_seen, 1)
        labels = data.train.labels
        keep = []
        g = torch.Generator().manual_seed(classes_seen)
        for c in range(classes_seen):
            idx = (labels == c).nonzero().flatten()
            keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
        idx = torch.cat(keep) if keep else torch.empty(0, dtype=torch.long)
        self.images, self.labels = data.train.get(idx), labels[idx].clone()

    def state(self) -> dict[str, Any]:
        return {"tensors": self.tensors, "count": self.count, "seen": self.seen,
                "images": self.images, "labels": self.labels}

    def load(self, state: dict[str, Any]) -> None:
        self.tensors = {k: v.to(self.device) for k, v in state["tensors"].items()}
        self.count, self.seen = int(state["count"]), int(state["seen"])
        self.images, self.labels = state["images"], state["labels"]
        if not 0 <= self.count <= self.capacity or self.seen < self.count or any(
                len(v) != self.capacity for v in self.tensors.values()):
            raise ValueError(f"a memory of {self.count} of {self.capacity} exemplars "
                             f"({', '.join(f'{k}: {len(v)}' for k, v in self.tensors.items())})")


class _Run:
    """The :class:`~costmodel.methods.base.TaskRun` a method sees between steps."""

    def __init__(self, trainer: Trainer, task: int) -> None:
        self.scenario, self.task, self.net = trainer.s, task, trainer.net
        self.state, self.device, self._t = trainer.state, trainer.device, trainer

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._t.task_batches(self.task, mixed=False)

    def memory_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._t.memory_batches()


Progress = Callable[[dict[str, Any]], None]


class Trainer:
    def __init__(self, s: Scenario, data: TaskData, device: str = "cpu", out: Path | None = None,
                 checkpoint: str | None = None, seed: int = 0, progress: Progress | None = None) -> None:
        self.s = methods.resolve(s.replace(device=device))
        self.method = methods.get(self.s.method, self.s.impl)
        methods.check_trains(self.s)
        self.data, self.device, self.out, self.seed = data, device, out, seed
        self.progress = progress or (lambda info: None)
        torch.manual_seed(seed)
        self.net = build_network(self.s, self.method, 1, device)
        if checkpoint:
            load_weights(self.net, checkpoint)
        self.state: dict[str, Any] = {}
        self.memory = _Memory(self.s, self.method, device)
        self.result = RunResult(self.s, class_order=data.class_order, device=device)
        self.generator = torch.Generator().manual_seed(seed)
        self.next_task = 0
        self.saved_tasks = 0
        """Finished tasks whose checkpoint is on disk (what an interruption keeps)."""
        self._meta = engine.step_model(self.s, self.method)

    # -- data ------------------------------------------------------------------
    def task_batches(self, task: int, mixed: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d, s = self.data, self.s
        idx = d.task_indices(d.train, task)
        if not mixed or self.memory.images is None or not len(self.memory.labels):
            yield from d.batches(d.train, idx, s.batch_size, self.device, s.torch_dtype,
                                 generator=self.generator)
            return
        # PyCIL mixes the memory into the task's data: one shuffled set of both
        n_new, n_mem = len(idx), len(self.memory.labels)
        order = torch.randperm(n_new + n_mem, generator=self.generator)
        for start in range(0, len(order), s.batch_size):
            part = order[start:start + s.batch_size]
            new, mem = part[part < n_new], part[part >= n_new] - n_new
            images = torch.cat([d.train.get(idx[new]), self.memory.images[mem]])
            labels = torch.cat([d.train.labels[idx[new]], self.memory.labels[mem]])
            yield d.normalize(images, self.device, s.torch_dtype), labels.to(self.device)

    def memory_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        m = self.memory
        if m.images is None:
            return iter(())
        s = self.s
        return ((self.data.normalize(m.images[i:i + s.batch_size], self.device, s.torch_dtype),
                 m.labels[i:i + s.batch_size].to(self.device))
                for i in range(0, len(m.labels), s.batch_size))

    # -- one phase ---------------------------------------------------------------
    def _phases(self, task: int) -> list[Phase]:
        return [p for p in self.method.schedule(self.s)
                if p.first_task <= task < p.first_task + p.tasks]

    def train_phase(self, task: int, phase: Phase, run: _Run | None) -> tuple[int, float, float]:
        s, method = self.s, self.method
        trainable = trainable_set(s, method, self._meta, phase.variant)
        for name, p in self.net.named_parameters():
            p.requires_grad_(name in trainable)
        teacher = None
        if method.teachers(s, phase.variant):
            teacher = copy.deepcopy(self.net).requires_grad_(False).eval()
            self.state["teacher"] = teacher
        opt = build_optimizer(s.optimizer, self.net.parameters(),
                              lr=float(s.options.get("lr", 0.01)))
        replay = method.replay_batch(s, phase.variant)
        images, loss_sum, steps = 0, 0.0, 0
        per_epoch = self._batches_per_epoch(task, phase.mixed)
        done = self._epochs_before(task, phase)
        start = time.perf_counter()
        for epoch in range(phase.epochs):
            self.net.train()
            info = {"task": task, "phase": phase.name, "epoch": epoch + 1, "epochs": phase.epochs,
                    "epochs_done": done + epoch, "step": 0, "steps": per_epoch,
                    "loss": loss_sum / steps if steps else None,
                    "images_per_s": None}
            self.progress(info)  # before the first step, which may be slow (fp16 on a CPU)
            for step, (x, y) in enumerate(self.task_batches(task, phase.mixed), 1):
                buffer = self.memory.views()
                ctx = TrainContext(self.net, task, self.state, buffer, s.torch_dtype, s.tasks,
                                   s.classes, phase.variant, s.options,
                                   replay if buffer or method.replay_is_buffer else 0,
                                   zero_grad=opt.zero_grad)
                if not method.zeroes_grad_in_step:
                    opt.zero_grad(set_to_none=True)
                loss = method.step(ctx, x, y)
                opt.step()
                method.after_step(run)
                if method.memory == "reservoir":
                    self.memory.add_batch({"x": x, "y": y, **ctx.keep})
                images += len(y)
                steps += 1
                loss_sum += float(loss)
                elapsed = time.perf_counter() - start
                self.progress(info | {"step": step, "loss": loss_sum / steps,
                                      "images_per_s": images / max(elapsed, 1e-9)})
        self.state.pop("teacher", None)
        return images, loss_sum / max(steps, 1), time.perf_counter() - start

    def _batches_per_epoch(self, task: int, mixed: bool) -> int:
        n = len(self.data.task_indices(self.data.train, task))
        if mixed and self.memory.labels is not None:
            n += len(self.memory.labels)
        return math.ceil(n / self.s.batch_size)

    def _epochs_before(self, task: int, phase: Phase) -> int:
        """Epochs of the whole run before ``phase`` of ``task`` (for progress bars)."""
        done = sum(p.epochs for t in range(task) for p in self._phases(t))
        for p in self._phases(task):
            if p == phase:  # a frozen dataclass: equal fields, the same phase
                break
            done += p.epochs
        return done

    # -- the run -------------------------------------------------------------------
    def run(self, resume: bool = False) -> RunResult:
        """Train the tasks not yet finished.  Everything that can be refused (the
        checkpoint to resume, the output folder) is checked before the first step."""
        if resume:
            self.restore()
        if self.out is not None:
            ckpt.prepare_out_folder(self.out)
        for task in range(self.next_task, self.s.tasks):
            run = _Run(self, task)
            self.method.begin_task(run)
            images, loss, seconds = 0, 0.0, 0.0
            for phase in self._phases(task):
                n, loss, sec = self.train_phase(task, phase, run)
                images, seconds = images + n, seconds + sec
            self.method.end_task(run)
            if self.method.memory == "per-class":
                self.memory.update_per_class(self.data, (task + 1) * self.data.classes_per_task)
            cil, til = self.evaluate(task)
            self.result.tasks.append(TaskResult(task, seconds, images, images / max(seconds, 1e-9),
                                                loss, cil, til))
            self.next_task = task + 1
            self.save()
        return self.result

    @torch.no_grad()
    def evaluate(self, last_task: int) -> tuple[list[float], list[float]]:
        d, s = self.data, self.s
        self.net.eval()
        k = d.classes_per_task
        cil, til = [], []
        for t in range(last_task + 1):
            idx = d.task_indices(d.test, t)
            right_cil = right_til = 0
            for x, y in d.batches(d.test, idx, 256, self.device, s.torch_dtype, shuffle=False):
                out = self.net(x)
                out = out[0] if isinstance(out, tuple) else out
                right_cil += int((out.argmax(1) == y).sum())
                right_til += int((out[:, t * k:(t + 1) * k].argmax(1) + t * k == y).sum())
            cil.append(right_cil / max(len(idx), 1))
            til.append(right_til / max(len(idx), 1))
        self.net.train()
        return cil, til

    # -- checkpoints -------------------------------------------------------------
    def _data_identity(self) -> dict[str, Any]:
        d = self.data
        return {"class_order": list(d.class_order), "train_images": len(d.train),
                "test_images": len(d.test)}

    def save(self) -> None:
        """The checkpoint and results.json, staged together then renamed into place."""
        if self.out is None:
            return
        state = {k: v for k, v in self.state.items() if k != "teacher"}
        run = ckpt.RunCheckpoint(
            scenario=self.s.to_json(), seed=self.seed, data=self._data_identity(),
            next_task=self.next_task, model=self.net.state_dict(), state=state,
            memory=self.memory.state(), results=[t.to_json() for t in self.result.tasks],
            rng=ckpt.capture_rng(self.generator, self.device))
        ckpt.write(self.out / CHECKPOINT, run,
                   beside={self.out / RESULTS: json.dumps(self.result.to_json(), indent=2)})
        self.saved_tasks = self.next_task

    def restore(self) -> None:
        """Continue from the checkpoint in ``out``: refused, in one line and before
        anything changes, unless it is costcl's, intact, and of this very run."""
        path = (self.out or Path(".")) / CHECKPOINT
        if not path.exists():
            raise CostclError(f"--resume, but there is no checkpoint at {str(path)!r}; run without "
                              "--resume first (or point --out at the earlier run)")
        ck = ckpt.read(path)
        differs = ck.first_difference(self.s.to_json(), self.seed, self._data_identity())
        if differs:
            name, then, now = differs
            raise CostclError(f"--resume: the checkpoint in {str(path.parent)!r} was trained with "
                              f"{name}={_shown(then)}, this command says {name}={_shown(now)}; "
                              "rerun with the same flags or a new --out")
        if not 0 <= ck.next_task <= self.s.tasks or len(ck.results) != ck.next_task:
            raise CostclError(f"{str(path)!r} says {ck.next_task} tasks are done but holds "
                              f"{len(ck.results)} results; {ckpt.RESUME_FIX}")
        try:
            self.net.load_state_dict(ck.model)
            self.memory.load(ck.memory)
            tasks = [TaskResult(**{k: v for k, v in t.items() if k not in ("cil_mean", "til_mean")})
                     for t in ck.results]
            ckpt.restore_rng(ck.rng, self.generator, self.device)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise CostclError(f"{str(path)!r} does not fit this run ({first}); "
                              f"{ckpt.RESUME_FIX}") from None
        self.state.update(_to_device(ck.state, self.device))
        self.result.tasks = tasks
        self.next_task = self.saved_tasks = ck.next_task


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


def _to_device(obj: Any, device: str) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj
