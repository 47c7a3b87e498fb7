"""The public entry point: what one step and one whole CL run of a method cost.

>>> from costmodel import Scenario, estimate
>>> e = estimate(Scenario(method="sgd", model="resnet18-cifar", batch_size=32))
>>> e.memory.peak_bytes, e.step.forward_flops

Every number comes from the engine's formulas over the traced facts (the step
is traced once on the meta device, never executed).  ``convention`` picks the
accounting: ``runtime`` (what PyTorch allocates) or ``paper`` (the LightCL
table's theoretical one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from costmodel import conventions, engine, gc_pause, methods, paper
from costmodel.errors import CostclError
from costmodel.input_checks import cuda_workspace_note, recurrent_note, small_input_note
from costmodel.layers import LayerCost, layer_table
from costmodel.memory.optimizers import optimizer
from costmodel.memory.simulate import CATEGORIES
from costmodel.methods.base import Method
from costmodel.scenario import Scenario
from costmodel.time_estimate import TimeCost, time_cost
from costmodel.time_profile import TimeProfile, for_device
from costmodel.trace.records import at

CONVENTIONS = ("runtime", "paper")
BREAKDOWN_KEYS = ("parameters", "gradients", "optimizer_state", "activations", "buffer",
                  "method_state", "temporaries", "model_buffers", "inputs")


@dataclass(frozen=True)
class StepCost:
    forward_flops: int
    backward_flops: int
    elementwise_flops: int
    backward_input_flops: int
    backward_weight_flops: int
    grouped_weight_grad_excess_flops: int
    """Part of ``backward_flops`` that only FlopCounterMode's grouped-conv rule counts."""
    samples: int
    model_calls: int


@dataclass(frozen=True)
class PhaseCost:
    name: str
    tasks: int
    epochs: int
    images: int
    steps: int
    flops: int


@dataclass(frozen=True)
class RunCost:
    steps: int
    total_flops: int
    phases: tuple[PhaseCost, ...]


@dataclass(frozen=True)
class MemoryCost:
    peak_bytes: int
    breakdown_bytes: dict[str, int]
    phase: str
    """Where the peak sits: 'forward', 'backward' or 'optimizer'."""
    where: str
    run_peak_bytes: int = 0
    """The peak over the whole CL run as the implementation runs it: the steps of every
    task and the work between them (evaluation, a new task's references)."""
    run_peak_where: str = ""
    """'step (phase, op)' or 'WORK (phase, op)'."""
    host_bytes: int = 0
    """What the implementation keeps outside the device allocator (host exemplars)."""
    peak_with_scratch_bytes: int | None = None
    """The step's peak with the CPU kernels' own buffers (oneDNN's reorders,
    :mod:`costmodel.memory.kernel_scratch`): what the CPU allocator hands out.  ``None``
    where not modelled (CUDA)."""
    scratch_threads: int = 0
    """The CPU threads that peak is for (``torch.get_num_threads()`` when estimated:
    some of oneDNN's buffers are per thread); 0 where not modelled."""

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


@dataclass(frozen=True)
class Estimate:
    convention: str
    flops_convention: str
    scenario: Scenario
    step: StepCost
    run: RunCost
    memory: MemoryCost
    trainable_params: int
    total_params: int
    layers: tuple[LayerCost, ...] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    trainable: frozenset[str] = frozenset()
    """Names of the parameters that train (not in the JSON: it can be long)."""
    time: TimeCost | None = None
    """Seconds per step and hours per run on a device profile (runtime convention)."""

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape (fields are added over time, never renamed)."""
        out: dict[str, Any] = {
            "convention": self.convention,
            "flops_convention": self.flops_convention,
            "scenario": self.scenario.to_json(),
            "step": {
                "forward_flops": self.step.forward_flops,
                "backward_flops": self.step.backward_flops,
                "elementwise_flops": self.step.elementwise_flops,
                "backward_input_flops": self.step.backward_input_flops,
                "backward_weight_flops": self.step.backward_weight_flops,
                "grouped_weight_grad_excess_flops": self.step.grouped_weight_grad_excess_flops,
                "samples": self.step.samples,
                "model_calls": self.step.model_calls,
            },
            "run": {
                "steps": self.run.steps,
                "total_flops": self.run.total_flops,
                "phases": [vars(p) for p in self.run.phases],
            },
            "memory": {
                "peak_bytes": self.memory.peak_bytes,
                "peak_mib": round(self.memory.peak_mib, 4),
                "breakdown_bytes": dict(self.memory.breakdown_bytes),
                "phase": self.memory.phase,
                "where": self.memory.where,
                "run_peak_bytes": self.memory.run_peak_bytes,
                "run_peak_where": self.memory.run_peak_where,
                "host_bytes": self.memory.host_bytes,
                "peak_with_scratch_bytes": self.memory.peak_with_scratch_bytes,
                "scratch_threads": self.memory.scratch_threads,
            },
            "params": {"total": self.total_params, "trainable": self.trainable_params},
            "notes": list(self.notes),
        }
        if self.time is not None:
            out["time"] = self.time.to_json()
        if self.layers is not None:
            out["layers"] = [layer.to_json() for layer in self.layers]
        return out


def trainable_set(s: Scenario, method: Method, model: engine.StepModel,
                  variant: str = "main") -> frozenset[str]:
    """Which parameters train: the user's choice if given, else the method's."""
    names = model.all_params()
    if s.trainable is not None:
        unknown = sorted(s.trainable - names)
        if unknown:
            raise CostclError(f"trainable parameter {unknown[0]!r} is not in {s.model}; "
                              f"e.g. {', '.join(sorted(names)[:3])}")
        return frozenset(s.trainable)
    if s.train_from is not None:
        return train_from(model, s.train_from)
    chosen = method.trainable(s, model.network, variant)
    return names if chosen is None else frozenset(chosen)


def train_from(model: engine.StepModel, prefix: str) -> frozenset[str]:
    """Parameters first used at or after the first op of the first module named ``prefix...``."""
    trace = model.trace
    start = next((i for i, op in enumerate(trace.ops)
                  if op.module == prefix or op.module.startswith(prefix + ".")
                  or (op.module.startswith(prefix) and prefix.endswith("."))), None)
    if start is None:
        tops = [m.name for m in trace.modules if not m.name.startswith("<") and "." not in m.name]
        shown = ", ".join(dict.fromkeys(tops[:8]))
        raise CostclError(f"--train-from {prefix!r} names no module of {model.network.__class__.__name__}; "
                          f"valid names include: {shown}")
    first_use: dict[int, int] = {}
    for i, op in enumerate(trace.ops):
        for sid in op.inputs:
            first_use.setdefault(sid, i)
    return frozenset(p for p, sid in trace.param_sids.items() if first_use.get(sid, -1) >= start)


def _variants(s: Scenario, method: Method) -> set[str]:
    out = {p.variant for p in method.schedule(s)} | {"main"}
    if method.grows:
        out |= {"first"} | {f"t{k}" for k in range(2, 3 + method.grows)}
    return out


def growth(method: Method, f: Any, t: int) -> int:
    """Step FLOPs at task index ``t`` >= 1 from the traces at 2, 3 (, 4) tasks seen:
    Newton's forward differences, exact for a polynomial of the method's degree."""
    values = [f(f"t{k}") for k in range(2, 3 + method.grows)]
    total, coeff, n = 0, 1, t - 1
    for i in range(len(values)):
        diffs = values[:]
        for _ in range(i):
            diffs = [b - a for a, b in zip(diffs, diffs[1:])]
        total += coeff * diffs[0]
        coeff = coeff * (n - i) // (i + 1)
    return total


def estimate(s: Scenario, convention: str = "runtime", flops_convention: str = "torch",
             instrumented: bool = False, layers: bool = False,
             profile: TimeProfile | None = None) -> Estimate:
    """Cost of one step and of the whole CL schedule of ``s`` (kept on disk for the next
    process: :func:`costmodel.cache.remembered`).  ``profile``: the device's speeds for
    the time block (default: this machine's calibrated profile for ``s.device`` if
    ``costcl calibrate`` wrote one, else an uncalibrated generic one)."""
    from costmodel import cache
    prof = profile if profile is not None else for_device(s.device)
    return cache.remembered("estimate", _answer_parts(s, convention, flops_convention,
                                                      instrumented, layers, prof),
                            lambda: _estimate(s, convention, flops_convention, instrumented,
                                              layers, prof), Estimate, model=s.model,
                            methods=(s.method,))


def _answer_parts(s: Scenario, convention: str, flops_convention: str, instrumented: bool,
                  layers: bool, profile: TimeProfile) -> tuple:
    """What an estimate's answer depends on beyond the code: its disk-cache key (on the
    CPU, the thread count its kernel scratch is for)."""
    threads = torch.get_num_threads() if s.device == "cpu" else 0
    return (s, convention, flops_convention, instrumented, layers, profile.digest(), threads)


def estimate_stored(s: Scenario, profile: TimeProfile | None = None) -> bool:
    """Whether :func:`estimate`'s default answer for ``s`` is in the disk cache."""
    from costmodel import cache
    prof = profile if profile is not None else for_device(s.device)
    return cache.stored("estimate", _answer_parts(s, "runtime", "torch", False, False, prof),
                        model=s.model, methods=(s.method,))


@gc_pause.paused()
def _estimate(s: Scenario, convention: str, flops_convention: str, instrumented: bool,
              layers: bool, profile: TimeProfile) -> Estimate:
    if convention not in CONVENTIONS:
        from costmodel.errors import suggest
        raise suggest(convention, CONVENTIONS, "convention")
    conventions.check(flops_convention)
    s = methods.resolve(s)
    method = methods.get(s.method, s.impl)
    optimizer(s.optimizer)  # an unknown name fails before any tracing
    main = engine.step_model(s, method)
    trainable = trainable_set(s, method, main)
    B, R = s.batch_size, method.replay_batch(s)
    if convention == "paper":
        return _paper_estimate(s, method, main, trainable, flops_convention, layers)

    models = variant_models(s, method)
    plans = {v: sm.plan(trainable_set(s, method, sm, v), instrumented, s.device, (B, R))
             for v, sm in models.items()}
    memory = peak_memory(s, method, models, B, R, instrumented)
    whole = run_peak_memory(s, method, models, B, R, instrumented, memory)
    host = engine.stored_bytes(method.stored(s, main.network), s.device)["host"]
    plan = plans["main"]
    fl = plan.flops
    step = StepCost(
        forward_flops=at(fl.forward, B, R),
        backward_flops=at(fl.grad_input, B, R) + at(fl.grad_weight, B, R),
        elementwise_flops=at(fl.elementwise, B, R),
        backward_input_flops=at(fl.grad_input, B, R),
        backward_weight_flops=at(fl.grad_weight, B, R),
        grouped_weight_grad_excess_flops=at(fl.grouped_excess, B, R),
        samples=method.paper_terms(s).samples, model_calls=main.trace.model_calls)
    step = conventions.converted(step, main.trace, flops_convention, B, R)
    run = _run_cost(s, method, models, plans, flops_convention)
    breakdown = {k: memory.breakdown.get(k, 0) for k in BREAKDOWN_KEYS}
    total = sum(main.trace.param_numel.values())
    n_train = sum(main.trace.param_numel[p] for p in trainable)
    table = tuple(layer_table(main.trace, plan, B, R)) if layers else None
    notes = list(method.notes(s)) if hasattr(method, "notes") else []
    notes.append(implementation_note(method))
    for note in (recurrent_note(main.trace, s.device), cuda_workspace_note(s.device)):
        if note:
            notes.append(note)
    small = small_input_note(main.trace, main.network)
    if small:
        notes.append(small)
    if instrumented:
        notes.append("instrumented: branch gradients summed out of place, as under a Python "
                     "dispatch-mode memory tracker")
    timed = time_cost(s, method, models, plans, profile)
    return Estimate("runtime", flops_convention, s, step, run,
                    MemoryCost(sum(breakdown.values()), breakdown, memory.phase, memory.where,
                               whole.peak_bytes, whole.where, host,
                               memory.with_scratch_bytes,
                               torch.get_num_threads() if memory.with_scratch_bytes else 0),
                    n_train, total, table, tuple(notes), trainable, timed)


def implementation_note(method: Method) -> str:
    """Which code the numbers describe."""
    if method.impl == "costcl":
        return f"implementation costcl: {method.codebase.source}, the method's clean step"
    return (f"implementation {method.impl}: {method.codebase.source} "
            f"({'; '.join(method.cites)})")


def peak_memory(s: Scenario, method: Method, models: dict[str, engine.StepModel], batch: int,
                replay: int, instrumented: bool = False) -> engine.MemoryPoint:
    """The highest peak over the schedule's step variants, stored state included.

    ``s`` must be resolved; its buffer size sets the stored state.  The one place
    both ``estimate`` and the budget search (``costcl fit``) compute a peak.
    """
    opt = optimizer(s.optimizer)
    points = []
    for v, sm in models.items():
        r = replay if method.replays_in(v) else 0
        plan = sm.plan(trainable_set(s, method, sm, v), instrumented, s.device, (batch, r))
        stored = engine.stored_bytes(method.stored(s, sm.network, v), s.device)
        constants = {"buffer": stored["buffer"],
                     "method_state": stored["method_state"] + sm.state_bytes["method_state"]}
        points.append(plan.memory(batch, r, opt, s.device, constants))
    memory = max(points, key=lambda p: p.peak_bytes)  # the first of equal peaks
    scratch = [p.with_scratch_bytes for p in points]  # its own variant may peak elsewhere
    memory.with_scratch_bytes = None if None in scratch else max(scratch)
    return memory


def run_peak_memory(s: Scenario, method: Method, models: dict[str, engine.StepModel], batch: int,
                    replay: int, instrumented: bool = False,
                    step: engine.MemoryPoint | None = None) -> engine.MemoryPoint:
    """The whole run's peak: the highest step and every work between steps.

    A work (:meth:`Method.works`) is traced like a step, with the variant's stored
    state, the optimizer's state and, where the loop leaves them, the last step's
    gradients alive beside it.  ``where`` names the step or the work.
    """
    step = step or peak_memory(s, method, models, batch, replay, instrumented)
    best = engine.MemoryPoint(step.peak_bytes, step.breakdown, step.phase,
                              f"step ({step.phase}, {step.where})")
    opt = optimizer(s.optimizer)
    for work in method.works(s.replace(batch_size=batch)):
        sm = models.get(work.variant, models["main"])
        tset = trainable_set(s, method, sm, work.variant)
        step_plan = sm.plan(tset, instrumented, s.device, (batch, replay))
        wm = engine.work_model(s, method, work)
        plan = wm.plan(trainable_set(s, method, wm, work.variant), instrumented, s.device,
                       (work.batch, 0))
        totals = plan.timeline.totals(work.batch, 0)
        k = int(totals.argmax())
        cats = plan.timeline.coef[k] @ (1, work.batch, 0)
        breakdown = {c: int(v) for c, v in zip(CATEGORIES, cats)}
        breakdown["optimizer_state"] = step_plan.optimizer_bytes(opt, s.device)[0]
        breakdown["gradients"] += sum(step_plan.grad_sizes) if work.grads_alive else 0
        stored = engine.stored_bytes(method.stored(s, wm.network, work.variant), s.device)
        breakdown["buffer"] += stored["buffer"]
        breakdown["method_state"] += stored["method_state"] + wm.state_bytes["method_state"]
        total = sum(breakdown.values())
        if total > best.peak_bytes:
            best = engine.MemoryPoint(total, breakdown, plan.timeline.phase[k],
                                      f"{work.name} ({plan.timeline.phase[k]}, "
                                      f"{plan.timeline.where[k]})")
    return best


def variant_models(s: Scenario, method: Method) -> dict[str, engine.StepModel]:
    return {v: engine.step_model(s, method, v) for v in _variants(s, method)}


def per_sample_flops(trace: Any, plan: Any) -> tuple[int, int]:
    """Forward and backward FLOPs of one sample through the trained model, once.

    The first run of each layer in the step counts, per sample of whichever
    batch it ran on: what a pass outside the steps (Fisher, herding) costs.
    """
    fwd = bwd = 0
    seen: set[str] = set()
    for op in trace.ops:
        if not op.macs_by_kind or op.module in seen:
            continue
        seen.add(op.module)
        fwd += max(op.forward_flops[1], op.forward_flops[2])
        for node, g in zip(op.grad_nodes, op.grad_flops):
            if node is not None and plan.selection.active[node]:
                bwd += max(g[1], g[2])
    return fwd, bwd


def _run_cost(s: Scenario, method: Method, models: dict[str, engine.StepModel],
              plans: dict[str, Any], flops_convention: str) -> RunCost:
    B = s.batch_size

    def step_flops(variant: str, b: int, r: int) -> int:
        return conventions.step_total(plans[variant].flops, models[variant].trace,
                                      flops_convention, b, r)

    phases = []
    mac = 1 if flops_convention == "torch" else 2
    for ph in method.schedule(s):
        R = method.replay_batch(s, ph.variant)
        full, rest = divmod(ph.images, B)
        steps_per_epoch = full + (1 if rest else 0)
        fwd1, bwd1 = per_sample_flops(models[ph.variant].trace, plans[ph.variant])
        extra = (ph.extra_forward_samples * fwd1 + ph.extra_train_samples * (fwd1 + bwd1)) // mac
        flops = 0
        for t in range(ph.first_task, ph.first_task + ph.tasks):
            if method.grows and t > 0:  # after the first task, a polynomial in the task index
                f = lambda b, t=t: growth(method, lambda v: step_flops(v, b, R), t)  # noqa: E731
            elif method.grows:
                f = lambda b: step_flops("first", b, R)  # noqa: E731
            else:
                f = lambda b, v=ph.variant: step_flops(v, b, R)  # noqa: E731
            epoch = full * f(B) + (f(rest) if rest else 0)
            flops += ph.epochs * epoch + extra
        steps = ph.tasks * ph.epochs * steps_per_epoch
        phases.append(PhaseCost(ph.name, ph.tasks, ph.epochs, ph.images, steps, flops))
    return RunCost(sum(p.steps for p in phases), sum(p.flops for p in phases), tuple(phases))


def _base_params(s: Scenario) -> int:
    from costmodel.models.registry import build_model
    return sum(p.numel() for p in build_model(s.model, s.classes, s.input_shape[0]).parameters())


def _paper_estimate(s: Scenario, method: Method, main: engine.StepModel,
                    trainable: frozenset[str], flops_convention: str, layers: bool) -> Estimate:
    """The table's accounting: every task trains ``images x epochs`` samples (plus the
    replayed ones, ``samples / batch``), 3 forward passes each, times the method's factor."""
    terms = method.paper_terms(s)
    if len(s.input_shape) != 3:
        raise CostclError(f"--convention paper counts activations per 32x32 image pixel, as the "
                          f"LightCL table does; a {len(s.input_shape)}-number --input-size has no "
                          "image: use --convention runtime")
    if method.grows:  # the table's a and F are one model's, whatever the method builds around it
        base = methods.resolve(s.replace(method="sgd", options={}, setting="class-il"))
        sm = engine.step_model(base, methods.get("sgd"))
        f = paper.facts(sm.trace, sm.all_params(), s.input_shape[1:])
    else:
        f = paper.facts(main.trace, trainable, s.input_shape[1:])
    word = paper.PAPER_WORD_BYTES
    P = _base_params(s) * word  # the table's P: one model, whatever the method builds around it
    net_count = sum(main.trace.param_numel.values())
    train_count = sum(main.trace.param_numel[p] for p in trainable)
    weights = terms.weights * P if terms.weights is not None else net_count * word
    grads = (terms.gradients * P) if terms.gradients is not None else train_count * word
    breakdown = {k: 0 for k in BREAKDOWN_KEYS}
    breakdown["parameters"] = round(weights * terms.density)
    breakdown["gradients"] = round(grads * terms.density)
    breakdown["method_state"] = round(terms.extra_params * P) + terms.extra_bytes
    breakdown["activations"] = round(terms.samples * f.activation_bytes_per_sample)
    mac = 1 if flops_convention == "torch" else 2
    fwd = terms.samples * f.forward_flops_per_sample
    bwd = terms.samples * 2 * f.trainable_forward_flops_per_sample
    step = StepCost(round(fwd * terms.density) // mac, round(bwd * terms.density) // mac, 0, 0,
                    round(bwd * terms.density) // mac, 0, terms.samples, main.trace.model_calls)
    per_sample = f.forward_flops_per_sample + 2 * f.trainable_forward_flops_per_sample
    images = s.images_per_task() * s.tasks
    flops = round(images * s.epochs * per_sample * terms.samples / s.batch_size
                  * terms.flops_factor * terms.density) // mac
    steps = s.tasks * s.epochs * -(-s.images_per_task() // s.batch_size)
    run = RunCost(steps, flops, (PhaseCost("paper schedule", s.tasks, s.epochs,
                                           s.images_per_task(), steps, flops),))
    notes = ["paper convention: weights + gradients + main-path conv outputs "
             f"(a = {f.activation_bytes_per_sample / 2**20:.4g} MiB per sample, rounded as the "
             "LightCL table does); no optimizer state, buffer images or temporaries"]
    if terms.note:
        notes.append(terms.note)
    table = None
    if layers:
        table = tuple(layer_table(main.trace, main.plan(trainable), s.batch_size, 0))
    return Estimate("paper", flops_convention, s, step, run,
                    MemoryCost(sum(breakdown.values()), breakdown, "theoretical", "step"),
                    train_count, net_count, table, tuple(notes), trainable)
