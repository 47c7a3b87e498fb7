"""What a continual-learning method is to costcl: data plus a few small functions.

A method says, once, for both the engine and the bundled trainer:

* ``step(ctx, x, y)``: one training step, written against a
  :class:`StepContext`.  The engine runs it on meta tensors to trace it; the
  trainer runs it on real ones.  Same code, so the prediction and the
  measurement describe the same step.
* ``network`` / ``trainable``: which module trains, and which of its
  parameters (LightCL's frozen prefix, MEMO's new specialised block, ...).
* ``stored``: what it keeps between steps (replay exemplars, stored logits,
  Fisher information, a frozen teacher, masks), each with its shape, dtype and
  the category it is reported in.
* ``schedule``: the whole continual-learning run as phases of identical steps.

Adding a method is one file in this package with a subclass of :class:`Method`
(it is found by name) and its test.

An *implementation* is the same method as one codebase runs it (the LightCL
repository's, Mammoth's, PyCIL's, or costcl's own clean step): a small subclass
of the method in the same file, with ``impl`` naming it, ``codebase`` saying
what that codebase does for every method (:mod:`costmodel.codebases`), and
overrides only where the codebase's own code changes memory or FLOPs, each
with the ``file:line`` it reproduces in ``cites``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import prod
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from costmodel import checks
from costmodel.codebases import COSTCL, Codebase
from costmodel.errors import CostclError
from costmodel.scenario import Scenario


@dataclass(frozen=True)
class Option:
    """A method option (``--option KEY=VALUE``); a value must have the default's type.

    Numbers must be finite and at least ``minimum`` (0 unless said), above ``above``
    and at most ``maximum`` when given; an integer or string option takes one of
    ``choices`` when given.
    """

    default: Any
    help: str
    minimum: float = 0.0
    maximum: float | None = None
    above: float | None = None
    choices: tuple[Any, ...] = ()

    def check(self, key: str, value: Any) -> Any:
        """``value`` in the default's type, or a one-line error naming ``key`` and the fix."""
        name = f"--option {key}"
        if value == self.default and type(value) is type(self.default):
            return value  # resolved before (an empty default means "the method chooses")
        if isinstance(self.default, bool):
            return checks.boolean(value, name)
        if isinstance(self.default, int):
            value = checks.count(value, name, minimum=int(self.minimum))
        elif isinstance(self.default, float):
            return checks.number(value, name, minimum=self.minimum, maximum=self.maximum,
                                 above=self.above)
        else:
            value = checks.text(value, name)
        if self.choices and value not in self.choices:
            raise CostclError(f"{name} must be one of {', '.join(map(str, self.choices))}, "
                              f"got {value!r}")
        return value


@dataclass(frozen=True)
class Stored:
    """One tensor a method keeps between steps."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    category: str
    """'buffer' (replay exemplars and what travels with them) or 'method_state'."""
    note: str = ""
    where: str = "device"
    """'device' (held by the device's PyTorch allocator) or 'host' (kept outside it,
    e.g. PyCIL's numpy exemplar memory): host bytes are reported apart."""

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class PaperTerms:
    """A method's terms in the ``paper`` convention (see :mod:`costmodel.paper`)."""

    samples: int
    """Samples per step whose activations and FLOPs count (batch + replayed)."""
    weights: float | None = 1.0
    """Multiples of the model's parameter memory P held as weights (``None``: the
    network as built for the last task, for methods that grow it)."""
    gradients: float | None = None
    """Multiples of P held as gradients (``None``: the trainable part's share)."""
    extra_params: float = 0.0
    """Further parameter-sized tensors the method stores (Fisher, columns, ...)."""
    extra_bytes: int = 0
    """Further stored tensors counted by size (LightCL's feature references)."""
    flops_factor: float = 1.0
    """Multiplier on the whole run's FLOPs (JOINT retrains, PNN's columns)."""
    density: float = 1.0
    """Fraction of weights, gradients and FLOPs kept by sparse training."""
    note: str = ""


@dataclass(frozen=True)
class Phase:
    """Part of a schedule in which every step looks alike."""

    name: str
    tasks: int
    """Tasks this phase covers."""
    images: int
    """Training images seen per epoch of each of those tasks."""
    epochs: int
    variant: str = "main"
    """Which step: 'main' (the steady state, traced at the last task), 'first'
    (task 0: no buffer or teacher yet) or a method's own (e.g. 'learn')."""
    first_task: int = 0
    """Index of the first task of the phase (growing networks cost more per task)."""
    extra_forward_samples: int = 0
    """Per task, samples run forward only outside the steps (herding, references)."""
    extra_train_samples: int = 0
    """Per task, samples run forward and backward one at a time outside the steps
    (EWC's Fisher, ODIL's importance)."""
    mixed: bool = False
    """The phase's data is the task's images plus the exemplar memory (PyCIL)."""


def first_then_later(s: Scenario, first: Mapping[str, Any] | None = None,
                     later: Mapping[str, Any] | None = None) -> list[Phase]:
    """Task 0 with its own step ('first': no buffer, teacher or reference yet), then the
    steady state ('main') for every later task; ``first``/``later``: extra Phase fields."""
    n = s.images_per_task()
    return [Phase("first task", 1, n, s.epochs, "first", **(first or {})),
            Phase("later tasks", s.tasks - 1, n, s.epochs, "main", first_task=1, **(later or {}))]


class StepContext(Protocol):
    """What a step sees.  Training and tracing each provide one."""

    model: nn.Module
    task: int
    tasks: int
    classes: int
    variant: str
    options: Mapping[str, Any]
    """The method's resolved options (paper defaults, then ``--option``)."""
    replay_batch: int
    """Samples a replay draws (``Scenario.replay_batch``)."""
    state: Mapping[str, Any]

    def backward(self, loss: torch.Tensor) -> None: ...

    def zero_grad(self) -> None:
        """For a method with ``zeroes_grad_in_step``: where its code calls
        ``optimizer.zero_grad()`` (PyCIL: after the forward).  Until then the previous
        step's gradients stay allocated."""
        ...

    inputs: Mapping[str, torch.Tensor]
    """What the loader hands the step beside ``x`` and ``y`` (:meth:`Method.batch_inputs`)."""

    keep: dict[str, torch.Tensor]
    """What a step leaves for after it (the batch's logits, for DER's buffer)."""

    def replay(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` exemplars drawn from the buffer: 'x', 'y' and what else it stores."""
        ...


@dataclass(frozen=True)
class Work:
    """Work between training steps that the whole run's peak must cover (an
    evaluation pass, the references of a new task), traced like a step but with
    no ``backward()``: ``run(ctx, x)`` on a batch of ``batch`` samples."""

    name: str
    batch: int
    run: Callable[[StepContext, torch.Tensor], object]
    variant: str = "main"
    """Whose network, trainable set and stored state it runs with."""
    prepared: bool = True
    """The method's ``prepare`` results are alive during it."""
    grads_alive: bool = True
    """The last step's gradients are still allocated (zero_grad runs at the next step)."""


def evaluation_pass(train_mode: bool, no_grad: bool) -> Callable[[StepContext, torch.Tensor], None]:
    """Two consecutive test batches as an evaluation loop runs them: the first
    batch's output is replaced only when the second forward returns."""
    def run(ctx: StepContext, x: torch.Tensor) -> None:
        ctx.model.train(train_mode)
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            out = ctx.model(x)
            out = ctx.model(x)  # noqa: F841
    return run


class TaskRun(Protocol):
    """What the bundled trainer hands a method between steps (see lightcl.trainer)."""

    scenario: Scenario
    task: int
    net: nn.Module
    state: dict[str, Any]
    device: str

    def batches(self) -> Any:
        """The task's shuffled training batches (normalised, on the device)."""
        ...


class Method:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    impl: ClassVar[str] = "costcl"
    """Which implementation this class is (``--impl``): 'costcl' for the method's
    clean step, else the codebase it reproduces."""
    codebase: ClassVar[Codebase] = COSTCL
    cites: ClassVar[tuple[str, ...]] = ()
    """``file:line`` at ``codebase.commit`` of what this implementation reproduces."""
    reference_impl: ClassVar[str] = "costcl"
    """The implementation costed when none is named: the method's reference public code."""
    replays: ClassVar[bool] = False
    """Does a step draw a replay batch (``Scenario.replay_batch``) from a buffer?"""
    replay_is_buffer: ClassVar[bool] = False
    """Every stored sample is forwarded in every step (LightCL): replay batch = buffer."""
    grows: ClassVar[int] = 0
    """Degree in the task index of a growing network's step FLOPs (DER, MEMO: 1,
    one more backbone per task; PNN: 2, its lateral links grow with every column).
    The first task is traced on its own, later tasks at 2, 3 (, 4) tasks seen and
    extrapolated exactly; the peak is traced at the last task."""
    defaults: ClassVar[Mapping[str, Any]] = {}
    """Scenario fields the method's paper fixes (batch size, optimizer, ...); a value
    may be a function of the scenario (e.g. epochs by dataset)."""
    settings: ClassVar[tuple[str, ...]] = ("class-il", "task-il")
    """Evaluation settings the method can run under (the first is suggested)."""
    settings_why: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Option]] = {}
    memory: ClassVar[str | None] = None
    """How the bundled trainer keeps exemplars: 'reservoir' (Mammoth: every batch may
    enter) or 'per-class' (PyCIL: an even share per seen class after each task)."""
    reservoir: ClassVar[tuple[str, ...]] = ()
    """What a reservoir keeps of each batch: 'x', 'y', 'logits'."""
    zeroes_grad_in_step: ClassVar[bool] = False
    """The step calls ``ctx.zero_grad()`` itself; otherwise gradients are zeroed before it."""
    trains: ClassVar[bool] = True
    """Does ``costcl train`` run it (its between-task work is written)?"""
    sparse: ClassVar[bool] = False
    """Does the method have a sparse variant (``--sparsity``)?"""

    # -- structure -----------------------------------------------------------
    def network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        """The module that trains at a task; most methods train the plain model."""
        return build()

    def teacher_network(self, s: Scenario, build: Callable[[], nn.Module], tasks_seen: int) -> nn.Module:
        """A frozen copy kept for distillation (:meth:`teachers`): by default the network
        itself; a codebase whose classifier grows copies the previous task's."""
        return self.network(s, build, tasks_seen)

    def trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str] | None:
        """Parameters that train (``None``: all of them)."""
        return None

    def stored(self, s: Scenario, net: nn.Module, variant: str = "main") -> list[Stored]:
        """What is kept between steps during ``variant`` (none in the first task by default)."""
        return []

    def teachers(self, s: Scenario, variant: str = "main") -> int:
        """Frozen copies of the network kept for distillation."""
        return 0

    def replays_in(self, variant: str = "main") -> bool:
        """Does a variant's step draw replayed samples?  Never on the first task (no buffer yet)."""
        return self.replays and variant != "first"

    def buffer_limit(self, s: Scenario) -> int | None:
        """The most samples the code can store, whatever the buffer size asked (``None``:
        no limit of its own).  A budget search stops there."""
        return None

    def replay_batch(self, s: Scenario, variant: str = "main") -> int:
        """Replayed samples per step of a variant of a resolved scenario."""
        return s.replay_batch if self.replays_in(variant) else 0

    def paper_terms(self, s: Scenario) -> PaperTerms:
        """The table's accounting; by default: weights, gradients, every sample's activations."""
        return PaperTerms(samples=s.batch_size + self.replay_batch(s))

    # -- schedule ------------------------------------------------------------
    def schedule(self, s: Scenario) -> list[Phase]:
        return [Phase("all tasks", s.tasks, s.images_per_task(), s.epochs)]

    # -- the step, shared by engine and trainer ------------------------------
    def step(self, ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, ctx: StepContext) -> None:
        """Work the code does once before a task's steps whose results stay alive
        through them (in ``ctx.state``).  The trainer runs it at the task's start;
        the engine traces it before the step and counts its results, not its FLOPs."""

    def batch_inputs(self, s: Scenario, variant: str = "main") -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Per-sample tensors the codebase's loader hands the step beside ``x`` and ``y``
        (Mammoth: the un-augmented images; its LwF: the stored teacher logits), by name:
        (shape without the batch dimension, dtype).  They reach the step as ``ctx.inputs``."""
        return {}

    def anomaly_mode(self, variant: str = "main") -> bool:
        """Does backward run under anomaly detection in this variant's steps?"""
        return self.codebase.anomaly_mode

    def prepared_trainable(self, s: Scenario, net: nn.Module, variant: str = "main") -> frozenset[str] | None:
        """Parameters that require grad when ``prepare`` runs (``None``: the step's)."""
        return None

    def prepares(self, variant: str = "main") -> bool:
        return type(self).prepare is not Method.prepare and variant != "first"

    def works(self, s: Scenario) -> list[Work]:
        """Work between steps for the whole run's peak: by default the codebase's
        evaluation of the tasks seen so far."""
        ev = self.codebase.evaluation
        return [Work("evaluation", ev.batch_size or s.batch_size,
                     evaluation_pass(ev.train_mode, ev.no_grad))]

    # -- between steps, for the bundled trainer ---------------------------------
    def begin_task(self, run: TaskRun) -> None:
        """Before a task's first step (e.g. LightCL stores its references FS)."""

    def after_step(self, run: TaskRun) -> None:
        """After every optimizer step (e.g. re-apply sparsity masks)."""

    def end_task(self, run: TaskRun) -> None:
        """After a task's last step (EWC's Fisher, LightCL's important positions)."""

    # -- helpers -------------------------------------------------------------
    def option(self, s: Scenario, key: str) -> Any:
        return s.options.get(key, self.options[key].default)


def exemplars(s: Scenario, n: int, float_images: bool, note: str) -> list[Stored]:
    """The image and label tensors of an ``n``-exemplar buffer.

    Mammoth-style code keeps exemplars as float tensors on the device
    (``float_images``); PyCIL keeps uint8 images (MEMO's accounting).  Exemplars
    are counted wherever they live: on a Jetson CPU and GPU share one memory.
    Token ids stay int64 ids either way (there is no uint8 form of a vocabulary).
    """
    dtype = s.input_torch_dtype if float_images or s.input_dtype == "int64" else torch.uint8
    return [
        Stored("buffer.images", (n, *s.input_shape), dtype, "buffer", note),
        Stored("buffer.labels", (n,), torch.int64, "buffer", "class label of each exemplar"),
    ]


def classes_per_task(s: Scenario) -> int:
    return s.classes // s.tasks


def known_classes(ctx: StepContext) -> int:
    """Classes of the tasks before the current one."""
    return ctx.task * (ctx.classes // ctx.tasks)


def kd_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge distillation as PyCIL writes it: soft cross-entropy at temperature T."""
    log_p = torch.log_softmax(logits / temperature, dim=1)
    q = torch.softmax(teacher / temperature, dim=1)
    return -(q * log_p).sum() / logits.shape[0]
