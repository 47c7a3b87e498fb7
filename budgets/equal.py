"""Equal-budget configurations for any total budget, and equal FLOPs budgets.

Memory (``--budget-mib``): for each method, what its model takes, and how many
exemplars fit in the rest.  Two countings:

* ``memo``: MEMO's (:mod:`budgets.accounting`): backbone parameters x 4 bytes
  for the network the method holds at its last task (DER's T backbones, MEMO's
  shared blocks and T specialized ones), exemplars as uint8 images;
* ``runtime``: the method's whole runtime peak without exemplars (weights,
  optimizer state, activations, teachers, stored state), exemplars in the
  method's own format (Mammoth keeps float images, with labels and logits).

FLOPs (``--flops-budget``): how many epochs per task each method can afford
within the same total training FLOPs, as budgeted-CL work compares methods.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from budgets.accounting import MIB, WORD_BYTES, exemplar_bytes
from budgets.fit import CAP, PeakModel, largest, stored_format
from costmodel import checks, engine, methods
from costmodel.errors import CostclError
from costmodel.estimation import estimate
from costmodel.models.registry import backbone_params
from costmodel.scenario import Scenario

COUNTINGS = ("memo", "runtime")


@dataclass
class EqualRow:
    method: str
    model_bytes: int
    exemplar_bytes: int
    """Bytes of one exemplar in this counting (0: the method keeps none).  Runtime counting:
    how much the whole peak grows per exemplar, averaged over those that fit (LightCL
    forwards every stored sample in every step, so its exemplar costs activations too)."""
    exemplars: int | None
    short_by_bytes: int

    def to_json(self) -> dict[str, Any]:
        return vars(self) | {"fits": self.short_by_bytes == 0}


def memo_model_bytes(s: Scenario) -> int:
    """MEMO's model size of the network a method holds at its last task (no heads)."""
    method = methods.get(s.method, s.impl)
    net = engine.step_model(s, method).network
    if method.grows:  # wrappers: every Linear is a head
        params = sum(p.numel() for m in net.modules() if not isinstance(m, nn.Linear)
                     for p in m.parameters(recurse=False))
    else:
        params = backbone_params(net)
    return WORD_BYTES * params


def equal_budget(budget_bytes: int, base: Scenario, names: list[str],
                 counting: str = "memo", progress: Callable[[str], None] | None = None
                 ) -> list[EqualRow]:
    """What each method keeps within ``budget_bytes``; ``progress`` hears each method's name."""
    if budget_bytes <= 0:
        raise CostclError(f"--budget-mib must be > 0, got {budget_bytes / MIB:g}")
    if counting not in COUNTINGS:
        from costmodel.errors import suggest
        raise suggest(counting, COUNTINGS, "counting")
    methods.check_shared(base, names)
    rows = []
    for name in names:
        if progress:
            progress(name)
        given = methods.named(base, name)
        s = methods.resolve(given)
        if counting == "memo":
            rows.append(_shared_out(name, memo_model_bytes(s), exemplar_bytes(s.input_shape),
                                    budget_bytes))
        else:
            rows.append(_runtime_row(name, given, s, budget_bytes))
    if all(r.short_by_bytes for r in rows):
        smallest = min(rows, key=lambda r: r.model_bytes)
        raise CostclError(f"a budget of {budget_bytes / MIB:.2f} MiB is smaller than every model: "
                          f"even {smallest.method} needs {smallest.model_bytes / MIB:.2f} MiB "
                          f"({smallest.short_by_bytes / MIB:.2f} MiB short)")
    return rows


def _shared_out(name: str, model: int, per: int, budget_bytes: int) -> EqualRow:
    """The model first, then as many exemplars of ``per`` bytes as the rest holds."""
    if model > budget_bytes:
        return EqualRow(name, model, per, None, model - budget_bytes)
    return EqualRow(name, model, per, (budget_bytes - model) // per if per else None, 0)


def _runtime_row(name: str, given: Scenario, s: Scenario, budget_bytes: int) -> EqualRow:
    """Runtime counting: the largest buffer whose whole-run peak fits, from the scenario as
    given (a replay batch that follows the buffer, LightCL's, keeps following it)."""
    pm = PeakModel(given)
    model = pm.peak(s.batch_size, 0)
    if not pm.uses_buffer() and pm.buffer_limit is None:
        return _shared_out(name, model, 0, budget_bytes)
    if model > budget_bytes:
        return _shared_out(name, model, stored_format(s), budget_bytes)
    n = largest(lambda k: pm.peak(s.batch_size, k) <= budget_bytes, 0,
                cap=pm.buffer_limit or CAP)
    per = -(-(pm.peak(s.batch_size, n) - model) // n) if n else stored_format(s)
    return EqualRow(name, model, per, n, 0)


@dataclass
class EpochRow:
    method: str
    flops_per_epoch: int
    """Run FLOPs with one epoch per task (work outside the steps included)."""
    epochs: int
    total_flops: int

    def to_json(self) -> dict[str, Any]:
        return vars(self)


def _run_flops(s: Scenario, epochs: int) -> int:
    options = dict(s.options)
    if "init_epochs" in methods.get(s.method, s.impl).options:
        options["init_epochs"] = epochs  # PyCIL's first task scales too
    return estimate(s.replace(epochs=epochs, options=options)).run.total_flops


def flops_budget(budget_flops: float, base: Scenario, names: list[str],
                 progress: Callable[[str], None] | None = None) -> list[EpochRow]:
    """The most epochs per task each method affords within ``budget_flops``."""
    checks.number(budget_flops, "--flops-budget", above=0, fix="e.g. 1e15")
    from budgets.fit import largest

    methods.check_shared(base, names)
    rows = []
    for name in names:
        if progress:
            progress(name)
        s = methods.resolve(methods.named(base, name, epochs=None))
        epochs = largest(lambda e, s=s: _run_flops(s, e) <= budget_flops, 1, cap=1 << 20)
        rows.append(EpochRow(name, _run_flops(s, 1), epochs, _run_flops(s, epochs) if epochs else 0))
    return rows
