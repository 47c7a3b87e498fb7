"""``costcl validate``: run a method's real steps, measure them, set the prediction beside.

* Peak memory.  CUDA: ``torch.cuda.max_memory_allocated()`` over two steps
  after ``reset_peak_memory_stats()`` (``max_memory_reserved`` apart: it adds
  the caching allocator's slack).  CPU: torch.profiler's memory events on the plain run
  (:mod:`lightcl.profiled`); with fake tensors :class:`~lightcl.measure.StorageTracker`,
  a dispatch-mode tracker that also handles a module called twice in a step.
  Two steps, because optimizer state appears in the first.
* FLOPs of one step with FlopCounterMode, split at every ``backward()`` call.
* Seconds per step over ``steps`` further steps with nothing watching.

A tracker that works through a Python dispatch mode makes PyTorch sum branch
gradients out of place (it holds a reference), so a fake-tensor measurement is
compared with costcl's ``instrumented`` prediction; the profiler and the CUDA
allocator watch the plain run, which is compared with the plain prediction.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from costmodel import engine, methods
from costmodel.errors import CostclError
from costmodel.estimation import Estimate, estimate
from costmodel.scenario import Scenario
from lightcl.measure import StorageTracker, fake_cpu
from lightcl.runner import StepRunner, anomaly, build_runner


@dataclass
class Validation:
    predicted: Estimate
    measured: dict[str, Any]
    compared_with: str
    compared_peak_bytes: int
    predicted_instrumented_peak_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def peak_error(self) -> float | None:
        got = self.measured.get("peak_bytes")
        return None if not got else (self.compared_peak_bytes - got) / got

    @property
    def scratch_peak_error(self) -> float | None:
        """Predicted against measured peak with the CPU kernels' scratch (plain CPU run)."""
        got = self.measured.get("peak_with_scratch_bytes")
        want = self.predicted.memory.peak_with_scratch_bytes
        return None if not got or want is None else (want - got) / got

    @property
    def flops_error(self) -> float | None:
        got = self.measured.get("forward_flops", 0) + self.measured.get("backward_flops", 0)
        want = self.predicted.step.forward_flops + self.predicted.step.backward_flops
        return None if not got else (want - got) / got

    def to_json(self) -> dict[str, Any]:
        return {
            "predicted": self.predicted.to_json(),
            "predicted_instrumented_peak_bytes": self.predicted_instrumented_peak_bytes,
            "measured": self.measured,
            "compared_with": self.compared_with,
            "compared_peak_bytes": self.compared_peak_bytes,
            "relative_error": {"peak_bytes": self.peak_error,
                               "peak_with_scratch_bytes": self.scratch_peak_error,
                               "flops": self.flops_error},
            "notes": self.notes,
        }


class _FlopSplit:
    """Observer: FLOPs counted while backward() runs are backward FLOPs."""

    def __init__(self, counter: Any) -> None:
        self.counter, self.backward, self._start = counter, 0, 0

    def before_backward(self) -> None:
        self._start = self.counter.get_total_flops()

    def after_backward(self) -> None:
        self.backward += self.counter.get_total_flops() - self._start


class _PhaseSwitch:
    """Observer: tells the tracker which phase new storages belong to."""

    def __init__(self, tracker: StorageTracker) -> None:
        self.tracker = tracker

    def before_backward(self) -> None:
        self.tracker.phase = "backward"

    def after_backward(self) -> None:
        self.tracker.phase = "forward"


def _register(tracker: StorageTracker, r: StepRunner) -> list:
    for p in r.net.parameters():
        tracker.track(p, "parameters")
    for b in r.net.buffers():
        tracker.track(b, "model_buffers")
    tracker.track(r.x, "inputs")
    tracker.track(r.y, "inputs")
    stored = {st.name: st.category for st in r.method.stored(r.scenario, r.net, "main")}
    for name, t in {**r.context.state, **{f"buffer.{k}": v for k, v in r.context.buffer.items()}}.items():
        if isinstance(t, torch.Tensor):
            tracker.track(t, stored.get(name, "buffer" if name.startswith("buffer.") else "method_state"))
    for t in r.extra:
        tracker.track(t, "method_state")
    return tracker.watch_gradients(r.net.parameters())


def measure_cpu_peak(s: Scenario, fake: bool = False, variant: str = "main") -> dict[str, Any]:
    """Peak over two steps on the CPU, with the storage tracker."""
    resolved = methods.resolve(s)  # trace on meta first: a trace cannot run under fake tensors
    engine.step_model(resolved, methods.get(resolved.method, resolved.impl), variant)
    ctx = fake_cpu() if fake else contextlib.nullcontext()
    with ctx:
        tracker = StorageTracker()
        r = build_runner(s, "cpu", variant, observer=_PhaseSwitch(tracker),
                         seed=None if fake else 0)
        hooks = _register(tracker, r)
        with tracker.mode:
            for _ in range(2):
                tracker.phase = "forward"
                r.begin_step()
                with anomaly(r.method, r.context.variant) if not fake else contextlib.nullcontext():
                    r.method.step(r.context, r.x, r.y)
                tracker.phase = "optimizer"
                r.optimizer.step()
        for h in hooks:
            h.remove()
    return {"peak_bytes": tracker.peak, "breakdown_bytes": tracker.peak_breakdown}


def peak_variant(s: Scenario) -> str:
    """The step variant where the predicted step peak is (FOSTER's compression, a later
    task's step): the one validate runs, so measured and predicted are the same step."""
    from costmodel.estimation import peak_memory, variant_models

    method = methods.get(s.method, s.impl)
    models = variant_models(s, method)
    peaks = {v: peak_memory(s, method, {v: sm}, s.batch_size,
                            method.replay_batch(s, v)).peak_bytes for v, sm in models.items()}
    return max(peaks, key=lambda v: (peaks[v], v == "main"))


def measure_cpu_plain_peak(s: Scenario, variant: str = "main") -> dict[str, Any]:
    """Peak of the second of two plain steps on the CPU, from torch.profiler's memory
    events: no dispatch mode watches, so autograd runs as in a user's run.  Everything
    the runner builds counts; kernel scratch (allocated and freed inside one op) is
    reported apart, as costcl counts at the level of ops."""
    from lightcl.profiled import PlainRunProfile

    with PlainRunProfile() as prof:
        r = build_runner(s, "cpu", variant)
        r.step()
        with prof.window("step"):
            r.step()
    reading = prof.peak("step")
    return {"peak_bytes": reading.op_level_bytes,
            "peak_with_scratch_bytes": reading.with_scratch_bytes}


def measure_flops(s: Scenario) -> dict[str, int]:
    """One step's FLOPs on meta tensors (FlopCounterMode counts them exactly as on real ones),
    on the attention kernel the scenario's device runs."""
    from lightcl import flop_counting

    counter = flop_counting.counter()
    split = _FlopSplit(counter)
    r = build_runner(s, "meta", observer=split, seed=None)
    # (anomaly checks count no FLOPs, and cannot run on meta tensors)
    with counter, flop_counting.kernel_path(s):
        r.optimizer.zero_grad(set_to_none=True)
        r.method.step(r.context, r.x, r.y)
    total = counter.get_total_flops()
    return {"forward_flops": total - split.backward, "backward_flops": split.backward}


def time_steps(s: Scenario, device: str, steps: int) -> float:
    """Median seconds of ``steps`` steps after a warm-up, each on a fresh batch
    (:mod:`lightcl.step_timing`: one batch repeated slows a CPU with subnormal floats)."""
    from lightcl.step_timing import median_step_seconds

    return median_step_seconds(build_runner(s, device), steps)


def measure_cuda_peak(s: Scenario, variant: str = "main") -> dict[str, Any]:
    torch.cuda.empty_cache()
    r = build_runner(s, "cuda", variant)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    try:
        for _ in range(2):
            r.step()
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        del r
        torch.cuda.empty_cache()
        return {"peak_bytes": None, "reserved_bytes": None, "oom": True,
                "failed_batch": s.batch_size}
    return {"peak_bytes": int(torch.cuda.max_memory_allocated()),
            "reserved_bytes": int(torch.cuda.max_memory_reserved()), "oom": False}


def validate(s: Scenario, device: str = "cpu", steps: int = 3, fake: bool = False,
             progress: Any = None, profile: Any = None) -> Validation:
    """Predict, run, measure; ``fake`` measures memory on fake CPU tensors (fast, same bytes)."""
    if steps < 1:
        raise CostclError(f"--steps must be >= 1, got {steps}: validate runs real steps")
    if device not in ("cpu", "cuda"):
        from costmodel.errors import suggest
        raise suggest(device, ["cpu", "cuda"], "device")
    if device == "cuda" and not torch.cuda.is_available():
        raise CostclError("--device cuda, but no CUDA device is visible; use --device cpu")
    s = methods.resolve(s.replace(device=device))
    say = progress or (lambda _: None)
    say("predicting")
    predicted = estimate(s, profile=profile)  # profile: the time model's device speeds
    notes = []
    variant = peak_variant(s)
    if variant != "main":
        notes.append(f"the predicted step peak is in the {variant!r} step: that step's memory "
                     "is measured (FLOPs and time: the main step)")
    if device == "cuda":
        say("measuring peak memory (CUDA allocator)")
        measured = measure_cuda_peak(s, variant)
        compared, seen = "runtime", None
        name = torch.cuda.get_device_name()
    elif fake:
        say("measuring peak memory (storage tracker, fake tensors)")
        measured = measure_cpu_peak(s, fake=True, variant=variant)
        measured["reserved_bytes"] = None
        seen = estimate(s, instrumented=True).memory.peak_bytes
        compared = "instrumented"
        name = "cpu (fake tensors)"
        notes.append("a dispatch-mode tracker makes PyTorch sum branch gradients out of place; "
                     "the measurement is compared with costcl's instrumented prediction")
        if predicted.scenario.impl != "costcl" and methods.get(s.method, s.impl).anomaly_mode():
            notes.append("anomaly checks need real tensors: the fake run leaves them out")
    else:
        say("measuring peak memory (torch.profiler, the plain run)")
        measured = measure_cpu_plain_peak(s, variant)
        measured["reserved_bytes"] = None
        compared, seen = "runtime", None
        name = "cpu"
        notes.append("measured on the plain run (torch.profiler memory events): op level, and "
                     "with the kernels' scratch (oneDNN's reorders) in peak_with_scratch_bytes")
    say("counting FLOPs (FlopCounterMode)")
    measured |= measure_flops(s)
    if not measured.get("oom"):
        say(f"timing {steps} steps")
        measured["seconds_per_step"] = None if fake else time_steps(s, device, steps)
    measured["device"] = name
    return Validation(predicted, measured, compared,
                      seen if seen is not None else predicted.memory.peak_bytes, seen, notes)
