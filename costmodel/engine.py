"""Trace a method's step once, then answer for any batch, optimizer or freeze point.

:func:`step_model` traces the step of a (model, input, dtype, method) on the
meta device and caches it for the process.  A :class:`StepModel` derives one
:class:`Plan` per set of trainable parameters (a graph selection and a memory
timeline, milliseconds) and evaluates a plan for a batch size, replay batch,
optimizer and device in microseconds.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from costmodel import gc_pause, plugins
from costmodel.errors import CostclError
from costmodel.memory import graph
from costmodel.memory.kernel_scratch import AtBatch
from costmodel.memory.optimizers import OptimizerSpec
from costmodel.memory.simulate import CATEGORIES, Timeline, simulate
from costmodel.models.registry import build_model
from costmodel.trace import attention, recurrent
from costmodel.trace.recorder import BackwardHook, LayerFailed, NotAffine, TraceSetup, trace_step
from costmodel.trace.records import Lin, StepTrace, StorageKind

CUDA_BLOCK_BYTES = 512
"""The CUDA caching allocator hands out multiples of 512 bytes."""


def cuda_block_bytes(nbytes: int) -> int:
    """What the caching allocator hands out for a request of ``nbytes``."""
    return math.ceil(nbytes / CUDA_BLOCK_BYTES) * CUDA_BLOCK_BYTES


def sample_exemplars(buffer: Mapping[str, torch.Tensor], n: int,
                     dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Draw ``n`` exemplars uniformly with replacement; images come back as ``dtype``.

    The trainer samples with exactly this function, so the engine traces the
    same allocations (indices, gathered images, their float conversion).
    """
    size = next(iter(buffer.values())).shape[0]
    device = next(iter(buffer.values())).device
    idx = torch.randint(0, max(size, 1), (n,), device=device)
    out = {k: v[idx] for k, v in buffer.items()}
    images = out.get("x")
    if images is not None and images.dtype not in (dtype, torch.int64):  # token ids stay ids
        out["x"] = images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)
    return out


class TraceContext:
    """The :class:`~costmodel.methods.base.StepContext` of a traced step."""

    def __init__(self, model: nn.Module, task: int, state: Mapping[str, Any],
                 backward: BackwardHook, buffer: Mapping[str, torch.Tensor], dtype: torch.dtype,
                 tasks: int, classes: int, variant: str, options: Mapping[str, Any],
                 replay_batch: int, inputs: Mapping[str, torch.Tensor] | None = None) -> None:
        self.model, self.task, self.state = model, task, state
        self.inputs = dict(inputs or {})
        self._backward, self._buffer, self._dtype = backward, buffer, dtype
        self.tasks, self.classes, self.variant = tasks, classes, variant
        self.options, self.replay_batch = options, replay_batch
        self.keep: dict[str, torch.Tensor] = {}

    def backward(self, loss: torch.Tensor) -> None:
        self._backward(loss)

    def zero_grad(self) -> None:
        self._backward.zero_grad()

    def replay(self, n: int) -> dict[str, torch.Tensor]:
        return sample_exemplars(self._buffer, n, self._dtype)


@dataclass
class MemoryPoint:
    peak_bytes: int
    breakdown: dict[str, int]
    phase: str
    where: str
    with_scratch_bytes: int | None = None
    """The peak with the CPU kernels' scratch (:mod:`~costmodel.memory.kernel_scratch`);
    ``None`` where it is not modelled (CUDA, an instrumented run)."""


@dataclass
class Plan:
    selection: graph.Selection
    timeline: Timeline
    flops: graph.StepFlopsLin
    grad_sizes: list[int]
    _tot: np.ndarray = field(repr=False, default=None)  # (checkpoints, 3)
    _after: np.ndarray = field(repr=False, default=None)  # (3,)
    _state_cache: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict, repr=False)
    _scratch: tuple[np.ndarray, list] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._tot = self.timeline.coef.sum(axis=1)
        self._after = self.timeline.after_backward.sum(axis=0)

    def optimizer_bytes(self, opt: OptimizerSpec, device: str) -> tuple[int, int]:
        """(state, step temporaries) for this plan's trainable parameters."""
        key = (opt.name, device)
        if key not in self._state_cache:
            self._state_cache[key] = (opt.state_bytes(self.grad_sizes, device),
                                      opt.step_temporaries(self.grad_sizes, device))
        return self._state_cache[key]

    def _highest(self, x: np.ndarray, temps: int) -> tuple[int | None, int]:
        """(the checkpoint holding the step's peak at ``x``, its bytes); the checkpoint is
        ``None`` where the optimizer's step (after backward, plus ``temps``) is higher."""
        totals = self._tot @ x
        k = int(totals.argmax())
        after = int(self._after @ x) + temps
        return (None, after) if after > int(totals[k]) else (k, int(totals[k]))

    def memory(self, batch: int, replay: int, opt: OptimizerSpec, device: str,
               constants: Mapping[str, int], scratch: bool = True) -> MemoryPoint:
        """The step's peak at (batch, replay); ``scratch``: also the peak with the CPU
        kernels' scratch (``with_scratch_bytes``; a sweep of thousands leaves it out)."""
        state, temps = self.optimizer_bytes(opt, device)
        x = np.array((1, batch, replay), dtype=np.int64)
        k, _ = self._highest(x, temps)
        if k is None:
            cats = self.timeline.after_backward @ x
            phase, where = "optimizer", f"{opt.name}.step()"
            extra_temps = temps
        else:
            cats = self.timeline.coef[k] @ x
            phase, where = self.timeline.phase[k], self.timeline.where[k]
            extra_temps = 0
        breakdown = {c: int(v) for c, v in zip(CATEGORIES, cats)}
        breakdown["temporaries"] += extra_temps
        breakdown["optimizer_state"] = state
        for name, value in constants.items():
            breakdown[name] = breakdown.get(name, 0) + value
        peak = sum(breakdown.values())
        return MemoryPoint(peak, breakdown, phase, where,
                           self._with_scratch(x, peak, state + sum(constants.values()))
                           if scratch else None)

    def peak(self, batch: int, replay: int, opt: OptimizerSpec, device: str,
             outside_bytes: int) -> tuple[int, str]:
        """(peak bytes, phase) of :meth:`memory` without its breakdown, for sweeps of
        thousands of points (``outside_bytes``: the sum of its ``constants``)."""
        state, temps = self.optimizer_bytes(opt, device)
        x = np.array((1, batch, replay), dtype=np.int64)
        k, top = self._highest(x, temps)
        return top + state + outside_bytes, "optimizer" if k is None else self.timeline.phase[k]

    def _with_scratch(self, x: np.ndarray, peak: int, outside: int) -> int | None:
        """The op-level peak or a kernel's scratch over its checkpoint, whichever is higher.
        Scratch that is not affine in the batch is taken at ``x``'s batch."""
        if self.timeline.scratch is None:
            return None
        if not self.timeline.scratch:
            return peak
        planes, at_batch = self._scratch_planes()
        highest = int((planes @ x).max()) if len(planes) else 0
        for k, alternative in at_batch:
            extra = alternative.bytes_at(int(x[1]), int(x[2]))
            if extra is not None:
                highest = max(highest, int(self._tot[k] @ x) + extra)
        return max(peak, highest + outside)

    def _scratch_planes(self) -> tuple[np.ndarray, list[tuple[int, AtBatch]]]:
        """(alternatives, 3): each affine scratch alternative with its checkpoint's bytes,
        made once per plan so an estimate pays one product and one max for them; and the
        alternatives evaluated at a batch."""
        if self._scratch is None:
            affine = [(k, e) for k, e in self.timeline.scratch if not isinstance(e, AtBatch)]
            k = np.array([k for k, _ in affine], dtype=np.int64)
            extra = np.array([e for _, e in affine], dtype=np.int64).reshape(len(affine), 3)
            self._scratch = (self._tot[k] + extra,
                             [(k, e) for k, e in self.timeline.scratch if isinstance(e, AtBatch)])
        return self._scratch


def _cuda_sizer(batch: int, replay: int) -> Any:
    """Storage sizes at one batch, rounded to allocator blocks (no longer linear in it)."""
    def sizer(nb: Lin) -> Lin:
        return (cuda_block_bytes(nb[0] + nb[1] * batch + nb[2] * replay), 0, 0)
    return sizer


class StepModel:
    """One traced step and the plans derived from it."""

    def __init__(self, trace: StepTrace, network: nn.Module | Callable[[], nn.Module],
                 state_bytes: Mapping[str, int], anomaly: bool = False,
                 prepared_trainable: frozenset[str] | None = None) -> None:
        self.trace = trace
        self._network = network
        """The meta network, or (a trace read from the disk cache) how to build it: most
        estimates never look at it, and building one costs more than reading its trace."""
        self.prepared_trainable = prepared_trainable
        """Parameters that required grad when the prologue ran (``None``: the step's)."""
        self.anomaly = anomaly
        """The code runs backward under anomaly detection (a NaN check per gradient)."""
        self.state_bytes = dict(state_bytes)
        """Bytes of the buffer and method state the trace saw (categories 'buffer', 'method_state')."""
        self._plans: dict[tuple, Plan] = {}

    def plan(self, trainable: frozenset[str], instrumented: bool = False, device: str = "cpu",
             at: tuple[int, int] | None = None) -> Plan:
        """The plan for a trainable set.  On CUDA, and for oneDNN's LSTM on the CPU (sizes
        rounded to pages), it depends on the batch (``at``); on the CPU, its kernel scratch
        depends on the threads this process runs its ops with."""
        per_batch = device == "cuda" or self.trace.has_onednn_lstm
        threads = torch.get_num_threads() if device == "cpu" else 0
        key = (trainable, instrumented, device, at if per_batch else None, threads)
        plan = self._plans.get(key)
        if plan is None:
            sel = graph.select(self.trace, trainable, self.prepared_trainable)
            sizer = _cuda_sizer(*(at or (1, 0))) if device == "cuda" else None
            tl = simulate(self.trace, sel, in_place_accumulation=not instrumented, sizer=sizer,
                          anomaly=self.anomaly, kernel_scratch=device == "cpu" and not instrumented,
                          at_batch=at or (1, 0), threads=threads)
            grad_sizes = [cuda_block_bytes(v) if device == "cuda" else v
                          for v in tl.grad_bytes.values()]
            plan = Plan(sel, tl, graph.flops(self.trace, sel), grad_sizes)
            self._plans[key] = plan
        return plan

    def all_params(self) -> frozenset[str]:
        return frozenset(self.trace.param_numel)

    @property
    def network(self) -> nn.Module:
        """The traced network on the meta device (as the method builds it)."""
        if not isinstance(self._network, nn.Module):
            self._network = self._network()
        return self._network


# -- building and caching traces ------------------------------------------------

_TRACES: dict[tuple, StepModel] = {}


def step_model(s: Any, method: Any, variant: str = "main") -> StepModel:
    """The traced step of a resolved scenario's method (cached per process).

    The key holds what changes the step's structure; batch sizes, optimizer,
    freeze point and buffer size do not (they are evaluated, not traced).
    """
    key = _structure_key(s, method, variant)
    cached = _TRACES.get(key)
    if cached is None:
        cached = _cached_trace(s, method, variant)
        _TRACES[key] = cached
    return cached


def _structure_key(s: Any, method: Any, part: str) -> tuple:
    """What changes a traced step's (or work's) structure; batch sizes, optimizer,
    freeze point and buffer size do not (they are evaluated, not traced)."""
    return (s.model, s.input_shape, s.classes, s.dtype, s.method, method.impl, part, s.tasks,
            tuple(sorted((k, repr(v)) for k, v in s.options.items())),
            round(float(s.sparsity or 0), 6), s.setting, s.input_dtype, s.vocab,
            attention.kernel_family(s.device, s.attention), recurrent.kernel_family(s.device))


def tasks_seen(s: Any, variant: str) -> int:
    """How many tasks the network has seen when a variant's step runs."""
    if variant == "first":
        return 1
    if variant.startswith("t") and variant[1:].isdigit():
        return int(variant[1:])
    return s.tasks


def split_state(stored: list[Any], tensors: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """Stored tensors as the step sees them: the replay buffer ('x', 'y', ...) and the rest."""
    buffer, state = {}, {}
    for st in stored:
        if st.name.startswith("buffer."):
            key = st.name.split(".", 1)[1]
            buffer[{"images": "x", "labels": "y"}.get(key, key)] = tensors[st.name]
        else:
            state[st.name] = tensors[st.name]
    return buffer, state


_WORKS: dict[tuple, StepModel] = {}


def work_model(s: Any, method: Any, work: Any) -> StepModel:
    """The traced between-step work ``work`` (a :class:`~costmodel.methods.base.Work`)."""
    key = _structure_key(s, method, work.name)
    cached = _WORKS.get(key)
    if cached is None:
        cached = _cached_trace(s, method, work.variant, work)
        _WORKS[key] = cached
    return cached


@gc_pause.paused()
def _cached_trace(s: Any, method: Any, variant: str, work: Any = None) -> StepModel:
    """The traced step (or work) from the disk cache when it holds a valid entry,
    else traced here and stored for the next process (:mod:`costmodel.cache`)."""
    from costmodel import cache
    from costmodel.trace import serialize

    store = cache.store("traces")
    key = _disk_key(s, method, variant, work) if store is not None else None
    if store is not None and key is not None:
        payload = store.load(key, cache.versions())
        if payload is not None:
            try:
                trace, state_bytes, anomaly, prepared = serialize.decode_step(payload)
            except serialize.DecodeError:
                pass  # never trusted: traced again below, and the entry overwritten
            else:
                return StepModel(trace, _network_builder(s, method, variant, trace,
                                                         store.path(key)),
                                 state_bytes, anomaly, prepared)
    sm = _trace_method(s, method, variant, work)
    if store is not None and key is not None:
        payload = serialize.encode_step(sm.trace, sm.state_bytes, sm.anomaly,
                                        sm.prepared_trainable)
        if payload is not None:
            store.save(key, cache.versions(), payload)
    return sm


def _disk_key(s: Any, method: Any, variant: str, work: Any) -> str | None:
    """Everything a trace depends on beyond the cache's :class:`~costmodel.cache.Versions`
    (costcl's source, torch, torchvision); ``None``: not cacheable (a user's factory or
    method plugin whose source is not found)."""
    from costmodel import cache

    source = cache.scenario_source(s.model, s.method)
    if source is None:
        return None
    part = work.name if work is not None else variant
    return cache.digest("trace", repr(_structure_key(s, method, part)), variant,
                        None if work is None else bool(work.prepared),
                        s.trainable is None and s.train_from is None,  # see prepared_trainable
                        source)


def _network_builder(s: Any, method: Any, variant: str, trace: StepTrace,
                     entry: Path) -> Callable[[], nn.Module]:
    """Builds the network of a trace read back, checked against it.  Only a user factory
    whose helper modules (not its own file, which is in the key) changed can fail the
    check; the entry is then removed and the error says to run again."""
    def build() -> nn.Module:
        net, _ = _networks(s, method, variant, teachers=False)
        if {name for name, _ in net.named_parameters()} != set(trace.param_numel):
            entry.unlink(missing_ok=True)
            raise CostclError(f"the cached trace of {s.model} does not match the network it "
                              "builds now (its code changed?); it was removed: run again")
        return net
    return build


def _networks(s: Any, method: Any, variant: str,
              teachers: bool = True) -> tuple[nn.Module, list[nn.Module]]:
    """A variant's network on the meta device and (``teachers``) its frozen teachers."""
    dtype = s.torch_dtype

    def build() -> nn.Module:
        return build_model(s.model, s.classes, s.input_shape[0], "meta", dtype)

    seen = tasks_seen(s, variant)
    with torch.device("meta"):  # layers a method adds (new heads) land on meta too
        net = method.network(s, build, seen)
        teacher_nets = [method.teacher_network(s, build, seen)
                        for _ in range(method.teachers(s, variant) if teachers else 0)]
    for t in teacher_nets:  # a frozen copy in eval mode, as PyCIL's freeze() leaves it
        t.requires_grad_(False)
        t.eval()
    return net, teacher_nets


def _trace_method(s: Any, method: Any, variant: str, work: Any = None) -> StepModel:
    """Trace a variant's step, or (``work``) a between-step work with no backward."""
    dtype = s.torch_dtype
    seen = tasks_seen(s, variant)
    net, teacher_nets = _networks(s, method, variant)
    teacher_externals = [(f"teacher{i}.{name}", StorageKind.STATE, p)
                         for i, t in enumerate(teacher_nets)
                         for name, p in list(t.named_parameters()) + list(t.named_buffers())]
    uses_replay = method.replays_in(variant)

    def factory(batch: int, replay: int, hook: BackwardHook) -> TraceSetup:
        sized = s.replace(buffer_size=replay) if method.replay_is_buffer else s
        stored = method.stored(sized, net, variant)
        with torch.device("meta"):
            tensors = {st.name: torch.empty(st.shape, dtype=st.dtype) for st in stored}
            x = torch.empty((batch, *s.input_shape), dtype=s.input_torch_dtype)  # or token ids
            y = torch.zeros(batch, dtype=torch.long)
            inputs = {name: torch.empty((batch, *shape), dtype=dt)
                      for name, (shape, dt) in method.batch_inputs(s, variant).items()}
        buffer, state = split_state(stored, tensors)
        if teacher_nets:
            state["teacher"] = teacher_nets[0]
        externals = [(st.name, StorageKind.REPLAY if st.category == "buffer" else StorageKind.STATE,
                      tensors[st.name]) for st in stored]
        ctx = TraceContext(net, seen - 1, state, hook, buffer, dtype, s.tasks, s.classes, variant,
                           s.options, replay, inputs)

        def run() -> object:
            if method.prepares(variant) and (work is None or work.prepared):
                method.prepare(ctx)
                hook.prologue_done()
            if work is not None:
                return work.run(ctx, x)
            return method.step(ctx, x, y)

        def left() -> list[torch.Tensor]:
            return [] if method.codebase.loop_holds_kept else list(ctx.keep.values())

        return TraceSetup(net, run,
                          externals + teacher_externals + [("<input>", StorageKind.INPUT, x),
                                                           ("<target>", StorageKind.INPUT, y)]
                          + [(f"<{k}>", StorageKind.INPUT, v) for k, v in inputs.items()],
                          s.input_shape, s.classes, left,
                          attention.kernel_family(s.device, s.attention),
                          recurrent.kernel_family(s.device))

    try:
        trace = trace_step(factory, replay=uses_replay and work is None,
                           forward_only=work is not None,
                           check_affine=plugins.target(s.method) is not None)
    except LayerFailed as e:
        shape = "x".join(map(str, s.input_shape))
        raise CostclError(f"model {s.model!r} on a {shape} input {e}; check --input-size "
                          "(C,H,W) and --num-classes against what the model expects") from None
    except NotAffine as e:
        raise CostclError(f"method {s.method!r}: {e}; costcl needs sizes affine in the batch "
                          "(no B x B matrices): see docs/methods.md") from None
    except CostclError:
        raise
    except Exception as e:  # noqa: BLE001 - the method's own code, outside the model
        where = "its step" if work is None else f"its {work.name}"
        raise CostclError(f"method {s.method!r}: {where} fails on meta tensors{_where(e)}: "
                          f"{type(e).__name__}: {_first_line(e)}; a step must work from shapes "
                          "alone (no .item(), .tolist(), bool(tensor) or data-dependent "
                          "shapes): see docs/methods.md") from None
    # Stored state is counted from its declaration (so the buffer size can change
    # without a new trace); the trace's copies of it are set to zero bytes.
    for st in trace.storages:
        if st.kind in (StorageKind.REPLAY, StorageKind.STATE):
            st.nbytes = (0, 0, 0)
    teacher_bytes = sum(p.numel() * p.element_size() for t in teacher_nets
                        for p in list(t.parameters()) + list(t.buffers()))
    prepared = None
    if s.trainable is None and s.train_from is None and method.prepares(variant):
        prepared = method.prepared_trainable(s, net, variant)
    return StepModel(trace, net, {"buffer": 0, "method_state": teacher_bytes},
                     anomaly=method.anomaly_mode(variant), prepared_trainable=prepared)


def _where(e: BaseException) -> str:
    """' (file.py:LINE)': the innermost frame of the error outside torch and costcl's tracer."""
    import traceback

    skip = (os.path.dirname(torch.__file__), os.path.dirname(__file__) + os.sep + "trace",
            __file__)
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith(skip)]
    return f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0].rstrip(".")


def stored_bytes(stored: list[Any], device: str = "cpu") -> dict[str, int]:
    """Bytes of the stored state the device allocator holds, by category, and 'host':
    what is kept outside it.  On the CPU the host is the device: host state counts."""
    out = {"buffer": 0, "method_state": 0, "host": 0}
    for st in stored:
        out["host" if st.where == "host" and device != "cpu" else st.category] += st.nbytes
    return out

