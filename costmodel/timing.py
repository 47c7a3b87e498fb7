"""Seconds per step and hours per CL run: a formula over the traced ops.

Each op of the traced step (the one trace the FLOPs and memory come from) is put
in a class, and the class's :class:`~costmodel.time_profile.Rate` turns its size
into seconds (its fixed and amount parts times the profile's ``fixed_scale`` and
``step_scale``, fitted to real steps by ``costcl calibrate``): convolutions and
matrix products by FLOPs at the rate of their
shape bucket, element-wise, normalisation, reduction and copy ops by the bytes
they move, views and autograd nodes at a fixed cost.  The backward is not traced
op by op: as :func:`costmodel.memory.graph.flops` does, each op's gradient FLOPs
count for the inputs that need a gradient in the configuration, and an
element-wise op's backward moves its bytes again when any of its inputs needs
one.  The step is forward + backward + the optimizer's step.

Every term is ``fixed + amount / rate`` with ``amount`` affine in the batch
sizes, so a plan's step time is itself a :data:`TimeLin` (seconds fixed, per
sample, per replayed sample), computed once per trainable set and evaluated
in nanoseconds.  Nothing here measures anything.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from costmodel.memory import graph
from costmodel.time_profile import TimeProfile
from costmodel.trace.records import Lin, OpFact, StepTrace, StorageKind

TimeLin = tuple[float, float, float]
"""Seconds ``fixed + per_sample*B + per_replayed*R``."""

SHARE_CLASSES = ("conv", "linear", "eltwise", "norm", "reduce", "copy", "overhead", "alloc",
                 "optimizer")
"""The classes a step's time is shared among (``time.share`` in the JSON)."""

NORM = frozenset({"native_batch_norm", "_native_batch_norm_legit",
                  "_native_batch_norm_legit_functional", "_native_batch_norm_legit_no_training",
                  "native_layer_norm", "native_group_norm"})
REDUCE = frozenset({"mean", "sum", "avg_pool2d", "avg_pool1d", "avg_pool3d",
                    "_adaptive_avg_pool2d", "adaptive_avg_pool2d", "_adaptive_avg_pool3d",
                    "max_pool2d_with_indices", "max_pool3d_with_indices", "amax", "amin", "max",
                    "min", "_log_softmax", "_softmax", "nll_loss_forward", "norm",
                    "linalg_vector_norm", "var", "std", "var_mean", "argmax", "any", "all",
                    "logsumexp", "cumsum"})
COPY = frozenset({"clone", "copy_", "_to_copy", "cat", "stack", "index", "index_select",
                  "gather", "contiguous", "masked_fill", "zeros", "zeros_like", "ones",
                  "ones_like", "full", "full_like", "fill_", "zero_", "randperm", "arange",
                  "rand", "randn", "randint", "rand_like", "randn_like", "bernoulli_",
                  "embedding", "scatter", "scatter_add", "index_put_", "index_add",
                  "constant_pad_nd", "repeat", "roll", "flip", "where", "lift_fresh_copy"})
VIEW = frozenset({"view", "_unsafe_view", "t", "transpose", "permute", "expand", "reshape",
                  "alias", "squeeze", "unsqueeze", "slice", "select", "as_strided", "detach",
                  "empty", "empty_like", "empty_strided", "new_empty", "split",
                  "split_with_sizes", "unbind", "flatten", "lift_fresh", "unfold",
                  "scalar_tensor", "_local_scalar_dense", "resize_", "set_", "_reshape_alias",
                  "expand_as", "view_as", "movedim", "narrow", "chunk", "diagonal"})
PASS_THROUGH = frozenset({"add", "add_", "sub", "sub_"})
"""Backward only hands the incoming gradient on (AddBackward0): no bytes moved."""


def base_name(name: str) -> str:
    """'aten.add_.Tensor' -> 'add_'."""
    parts = name.split(".")
    return parts[1] if name.startswith("aten.") and len(parts) > 1 else name


def op_class(op: OpFact) -> str:
    """conv, linear, norm, reduce, copy, view or eltwise."""
    if op.macs_by_kind == "conv":
        return "conv"
    if op.macs_by_kind:
        return "linear"
    base = base_name(op.name)
    for cls, names in (("norm", NORM), ("reduce", REDUCE), ("copy", COPY), ("view", VIEW)):
        if base in names or base.rstrip("_") in names:
            return cls
    return "eltwise"


def _per_sample(v: Lin) -> int:
    return v[1] or v[2]


def conv_shape(op: OpFact, trace: StepTrace) -> tuple[int, int, int, int]:
    """(input channels, output channels, kernel elements, stride squared) of a convolution,
    from facts that do not change with the batch: the reduction per output value is
    FLOPs / (2 x outputs), the weight's elements give the output channels, the module's
    recorded input shape the input channels (else a square 3x3 kernel is assumed)."""
    out = _per_sample(op.numel_out)
    reduction = _per_sample(op.forward_flops) // max(2 * out, 1)
    w = trace.storages[op.inputs[1]].nbytes[0] // trace.element_size if len(op.inputs) > 1 else 0
    c_out = w // reduction if reduction and w else 0
    shapes = trace.module_shapes.get(op.module)
    c_in = shapes[0][1][0] if shapes and len(shapes[0]) > 2 and not shapes[0][1][1] else 0
    if not c_in or reduction % c_in:
        c_in = reduction // 9 if reduction % 9 == 0 else reduction
    kernel = max(reduction // max(c_in, 1), 1)
    inp = _per_sample(op.numel_in)
    stride2 = round((inp / max(c_in, 1)) / (out / max(c_out, 1))) if c_out and out else 1
    return c_in, c_out, kernel, max(stride2, 1)


def conv_bucket(op: OpFact, trace: StepTrace) -> str:
    """A convolution's bucket (:data:`~costmodel.time_profile.CONV_BUCKETS`), from facts
    that do not change with the batch.

    ``first``: fewer than 32 values reduced per output (a stem on 1 to 3 channels: the
    output's writes dominate); ``grouped``: depthwise and grouped; ``pointwise``: 1x1;
    ``strided``: a larger kernel with a stride (the input read is four times the output);
    else by output channels: ``narrow`` (<= 32), ``mid`` (<= 128), ``wide``.
    """
    if any(op.grouped_excess):
        return "grouped"
    c_in, c_out, kernel, stride2 = conv_shape(op, trace)
    if c_in * kernel < 32:
        return "first"
    if kernel == 1:
        return "downsample" if stride2 > 1 else "pointwise"
    if stride2 > 1:
        return "strided"
    if not c_out:
        return "mid"
    return "narrow" if c_out <= 32 else "mid" if c_out <= 128 else "wide"


def moved_bytes(op: OpFact, cls: str, trace: StepTrace) -> Lin:
    """Bytes an op reads and writes, in the unit its class is calibrated in: first input
    plus output (a second activation-sized operand adds the output's size again; a copy
    moves its output twice, whatever it gathers from)."""
    e = trace.element_size
    i, o = op.numel_in, op.numel_out
    if cls == "copy":
        return (2 * e * o[0], 2 * e * o[1], 2 * e * o[2])
    operands = sum(1 for sid in op.inputs
                   if trace.storages[sid].kind not in (StorageKind.PARAM, StorageKind.BUFFER))
    k = 2 if cls == "eltwise" and operands >= 2 else 1
    return (e * (i[0] + k * o[0]), e * (i[1] + k * o[1]), e * (i[2] + k * o[2]))


class _Acc:
    """Seconds per class and phase, each a :data:`TimeLin`."""

    def __init__(self, scale: float = 1.0, fixed_scale: float = 1.0) -> None:
        self.terms: dict[tuple[str, str], list[float]] = {}
        self.scale, self.fixed_scale = scale, fixed_scale
        """The profile's :attr:`~costmodel.time_profile.TimeProfile.step_scale` and
        :attr:`~costmodel.time_profile.TimeProfile.fixed_scale`."""

    def add(self, cls: str, phase: str, rate: Any, amount: Lin = (0, 0, 0), count: int = 1) -> None:
        t = self.terms.setdefault((cls, phase), [0.0, 0.0, 0.0])
        t[0] += count * rate.fixed_s * self.fixed_scale
        if rate.per_s:
            for k in range(3):
                t[k] += amount[k] * self.scale / rate.per_s


def _matmul_key(op: OpFact, trace: StepTrace) -> str:
    return f"conv.{conv_bucket(op, trace)}" if op.macs_by_kind == "conv" else "linear"


def step_terms(trace: StepTrace, sel: graph.Selection, profile: TimeProfile,
               anomaly: bool = False) -> dict[tuple[str, str], TimeLin]:
    """The step's seconds by (class, 'forward'|'backward'), before the optimizer.

    ``anomaly``: the code runs backward under anomaly detection, which checks every
    gradient it computes for NaN (``isnan().any()``: a read of the gradient, at the
    reduction rate).
    """
    acc = _Acc(profile.step_scale, profile.fixed_scale)
    storages = trace.storages
    nan_check = profile.rate("reduce.fwd")
    for op in trace.ops[trace.prologue_ops:]:
        if op.name.startswith("<"):
            continue
        cls = op_class(op)
        if cls in ("conv", "linear"):
            key = _matmul_key(op, trace)
            acc.add(cls, "forward", profile.rate(f"{key}.fwd"), op.forward_flops)
            for sid, node, g in zip(op.inputs, op.grad_nodes, op.grad_flops):
                if graph.needs_grad(sel, node) and any(g):
                    phase = "bwd_w" if storages[sid].kind is StorageKind.PARAM else "bwd_in"
                    acc.add(cls, "backward", profile.rate(f"{key}.{phase}"), g)
                    if anomaly:
                        acc.add("reduce", "backward", nan_check, storages[sid].nbytes)
            continue
        if cls == "view":
            acc.add("overhead", "forward", profile.rate("view"))
            continue
        amount = moved_bytes(op, cls, trace)
        acc.add(cls, "forward", profile.rate(f"{cls}.fwd"), amount)
        if any(graph.needs_grad(sel, n) for n in op.grad_nodes) \
                and base_name(op.name) not in PASS_THROUGH:
            acc.add(cls, "backward", profile.rate(f"{cls}.bwd"), amount)
            if anomaly:
                e = trace.element_size
                acc.add("reduce", "backward", nan_check, tuple(e * v for v in op.numel_in))
    nodes = sum(sel.active)
    acc.add("overhead", "backward", profile.rate("node"), count=nodes)
    acc.add("overhead", "forward", profile.rate("step"))
    return {k: (v[0], v[1], v[2]) for k, v in acc.terms.items()}


def optimizer_seconds(trace: StepTrace, trainable: Iterable[str], optimizer: str,
                      profile: TimeProfile) -> float:
    """The optimizer's step: a fixed cost per parameter tensor (the CPU loop runs
    tensor by tensor) and the parameter elements at the optimizer's rate."""
    names = [p for p in trainable if p in trace.param_numel]
    rate = profile.rate(f"optimizer.{optimizer}")
    return profile.fixed_scale * rate.seconds(0) * len(names) + profile.step_scale * (
        sum(trace.param_numel[p] for p in names) / rate.per_s if rate.per_s else 0.0)


@dataclass(frozen=True)
class StepTime:
    """One step's seconds, as :func:`step_time` evaluates them at a batch."""

    step_s: float
    forward_s: float
    backward_s: float
    optimizer_s: float
    share: dict[str, float]
    """Fraction of the step each class takes (:data:`SHARE_CLASSES`)."""


class StepTimer:
    """A traced step's time model: one set of terms per trainable set, then any batch."""

    def __init__(self, trace: StepTrace, profile: TimeProfile, anomaly: bool = False) -> None:
        self.trace, self.profile, self.anomaly = trace, profile, anomaly
        self._terms: dict[frozenset[str], dict[tuple[str, str], TimeLin]] = {}
        self._opt: dict[tuple[frozenset[str], str], float] = {}
        self._lins: dict[tuple[frozenset[str], str | None], TimeLin] = {}
        self._allocs: dict[frozenset[str], tuple] = {}
        rate = profile.rates.get("alloc")
        self._alloc_s_per_byte = 1 / rate.per_s if rate and rate.per_s else 0.0

    def alloc_s(self, sel: graph.Selection, batch: int, replay: int = 0) -> tuple[float, float]:
        """(forward, backward) seconds faulting in large allocations' pages
        (:mod:`costmodel.large_allocations`; 0 where the profile has no such rate)."""
        if not self._alloc_s_per_byte:
            return 0.0, 0.0
        fwd_bwd = self._allocs.get(sel.trainable)
        if fwd_bwd is None:  # (imported here: it reads this module's op classes)
            from costmodel.large_allocations import LargeBytes, allocation_lines
            fwd_bwd = self._allocs[sel.trainable] = tuple(
                LargeBytes(lines) for lines in allocation_lines(self.trace, sel))
        k = self._alloc_s_per_byte
        return k * fwd_bwd[0](batch, replay), k * fwd_bwd[1](batch, replay)

    def terms(self, sel: graph.Selection) -> dict[tuple[str, str], TimeLin]:
        t = self._terms.get(sel.trainable)
        if t is None:
            t = self._terms[sel.trainable] = step_terms(self.trace, sel, self.profile,
                                                        self.anomaly)
        return t

    def optimizer_s(self, sel: graph.Selection, optimizer: str) -> float:
        key = (sel.trainable, optimizer)
        v = self._opt.get(key)
        if v is None:
            v = self._opt[key] = optimizer_seconds(self.trace, sel.trainable, optimizer,
                                                   self.profile)
        return v

    def lin(self, sel: graph.Selection, optimizer: str | None) -> TimeLin:
        """The whole step as one :data:`TimeLin` (``optimizer`` None: without its step)."""
        key = (sel.trainable, optimizer)
        v = self._lins.get(key)
        if v is None:
            c0 = self.optimizer_s(sel, optimizer) if optimizer else 0.0
            cb = cr = 0.0
            for a, b, c in self.terms(sel).values():
                c0, cb, cr = c0 + a, cb + b, cr + c
            v = self._lins[key] = (c0, cb, cr)
        return v

    def seconds(self, sel: graph.Selection, optimizer: str | None, batch: int,
                replay: int = 0) -> float:
        """The step's seconds (``optimizer`` None: forward and backward only)."""
        c0, cb, cr = self.lin(sel, optimizer)
        a_fwd, a_bwd = self.alloc_s(sel, batch, replay)
        return c0 + cb * batch + cr * replay + a_fwd + a_bwd

    def forward_seconds(self, sel: graph.Selection, batch: int) -> float:
        """A forward pass over ``batch`` samples (an evaluation batch)."""
        c0, cb, _ = self.forward_lin(sel)
        return c0 + cb * batch + self.alloc_s(sel, batch)[0]

    def forward_lin(self, sel: graph.Selection) -> TimeLin:
        out = [0.0, 0.0, 0.0]
        for (_, phase), lin in self.terms(sel).items():
            if phase == "forward":
                for k in range(3):
                    out[k] += lin[k]
        return (out[0], out[1], out[2])

    def step(self, sel: graph.Selection, optimizer: str, batch: int, replay: int = 0) -> StepTime:
        by_class = {c: 0.0 for c in SHARE_CLASSES}
        fwd = bwd = 0.0
        for (cls, phase), (c0, cb, cr) in self.terms(sel).items():
            s = c0 + cb * batch + cr * replay
            by_class[cls] += s
            if phase == "forward":
                fwd += s
            else:
                bwd += s
        a_fwd, a_bwd = self.alloc_s(sel, batch, replay)
        fwd, bwd = fwd + a_fwd, bwd + a_bwd
        by_class["alloc"] = a_fwd + a_bwd
        opt = self.optimizer_s(sel, optimizer)
        by_class["optimizer"] = opt
        total = fwd + bwd + opt
        share = {c: (v / total if total else 0.0) for c, v in by_class.items()}
        return StepTime(total, fwd, bwd, opt, share)


def evaluation_seconds(forward_s: Callable[[int], float], images: int,
                       batch: int = 256) -> float:
    """A forward over ``images`` in batches of ``batch`` (the trainer's evaluation);
    ``forward_s(b)``: one forward's seconds on ``b`` samples."""
    full, rest = divmod(images, batch)
    return full * forward_s(batch) + (forward_s(rest) if rest else 0.0)


def run_seconds(schedule: Iterable[Any], batch: int, tasks: int, replay_of: Callable[[str], int],
                step_s: Callable[[str, int, int, int], float], forward: TimeLin,
                one_sample_s: float, test_images_per_task: int,
                forward_s: Callable[[int], float]) -> tuple[float, float]:
    """(training steps and the work between them, evaluation) in seconds.

    ``step_s(variant, task, b, r)`` is one step's seconds; every phase runs its
    full batches and one smaller last batch per epoch, per task; a phase's extra
    forward samples (herding, references) cost the forward per sample, its extra
    trained samples (EWC's Fisher) a batch-of-one step each.  The evaluation after
    each task runs a forward over the test images of every task seen, ``forward_s(b)``
    seconds a batch of ``b``.
    """
    train = 0.0
    for ph in schedule:
        r = replay_of(ph.variant)
        full, rest = divmod(ph.images, batch)
        for t in range(ph.first_task, ph.first_task + ph.tasks):
            epoch = full * step_s(ph.variant, t, batch, r) + (step_s(ph.variant, t, rest, r)
                                                              if rest else 0.0)
            train += ph.epochs * epoch + ph.extra_forward_samples * forward[1] \
                + ph.extra_train_samples * one_sample_s
    evaluation = sum(evaluation_seconds(forward_s, test_images_per_task * (t + 1))
                     for t in range(tasks))
    return train, evaluation
