"""Counting FLOPs the way other tools do, from the same traced facts.

Papers quote training cost from three counters that disagree by design
(FACTS.md section 4):

* ``torch``: :class:`torch.utils.flop_counter.FlopCounterMode` - FLOPs, 2 per
  multiply-accumulate, convolutions and matrix products only, backward too.
  costcl's own convention.
* ``fvcore``: ``FlopCountAnalysis`` - multiply-accumulates called "flops";
  convolutions and matrix products, plus batch norm (4 per element, 5 with an
  affine transform, in training mode) and adaptive average pooling (one per
  input element); no backward.
* ``thop``: ``profile`` - multiply-accumulates, per module type: convolutions,
  ``nn.Linear``, batch norm (2 per element, 4 with affine), ``nn.AvgPool2d``
  (one per output element), ``nn.AdaptiveAvgPool2d`` (kernel + 1 per output
  element); functional calls (``F.relu``, ``+``) are invisible to it.

Backward FLOPs in the MAC conventions are costcl's backward halved: neither
tool counts a backward, and a step is what costcl is asked about.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from costmodel.errors import suggest
from costmodel.trace.records import OpFact, StepTrace, at

FLOPS_CONVENTIONS = ("torch", "fvcore", "thop")
TOOL_UNITS = {"torch": "FLOPs", "fvcore": "MACs", "thop": "MACs"}
"""What each convention counts: torch counts FLOPs, fvcore and thop count MACs."""


def check(name: str) -> None:
    if name not in FLOPS_CONVENTIONS:
        raise suggest(name, FLOPS_CONVENTIONS, "FLOPs convention")


def _bn_affine(op: OpFact) -> bool:
    return len(op.inputs) >= 5  # input, weight, bias, running mean, running var


def extra_macs(trace: StepTrace, op: OpFact, tool: str, module_type: str) -> tuple[str, Any]:
    """What ``tool`` counts for a non-matmul op: (category, Lin) or ('', None)."""
    base = op.name.split(".")[1] if op.name.startswith("aten.") else op.name
    if tool == "fvcore":
        if "batch_norm" in base and "backward" not in base:
            k = 5 if _bn_affine(op) else 4
            return "batch_norm", tuple(k * v for v in op.numel_in)
        if module_type.startswith("AdaptiveAvgPool") and base in ("mean", "_adaptive_avg_pool2d"):
            return "adaptive_avg_pool2d", op.numel_in
        if base.startswith("upsample_nearest"):
            return "upsample", op.numel_out
        if base.startswith("upsample_bilinear"):
            return "upsample", tuple(4 * v for v in op.numel_out)
    elif tool == "thop":
        if module_type.startswith("BatchNorm") and "batch_norm" in base:
            k = 4 if _bn_affine(op) else 2
            return "batch_norm", tuple(k * v for v in op.numel_in)
        if module_type.startswith("AvgPool") and base.startswith("avg_pool"):
            return "avg_pool", op.numel_out
        if module_type.startswith("AdaptiveAvgPool") and base in ("mean", "_adaptive_avg_pool2d"):
            return "adaptive_avg_pool", tuple(a + b for a, b in zip(op.numel_in, op.numel_out))
    return "", None


def by_category(trace: StepTrace, tool: str, batch: int, replay: int = 0,
                first_call_only: bool = False) -> dict[str, int]:
    """Forward count per op category in ``tool``'s convention (MACs for fvcore/thop)."""
    out: dict[str, int] = {}
    seen: set[str] = set()
    types = {m.name: m.type for m in trace.modules}
    for op in trace.ops:
        if first_call_only:
            key = f"{op.module}:{op.name}"
            if key in seen and op.macs_by_kind:
                continue
            seen.add(key)
        if op.macs_by_kind:
            v = at(op.forward_flops, batch, replay)
            out[op.macs_by_kind] = out.get(op.macs_by_kind, 0) + (v if tool == "torch" else v // 2)
        elif tool != "torch":
            cat, lin = extra_macs(trace, op, tool, types.get(op.module, ""))
            if cat:
                out[cat] = out.get(cat, 0) + at(lin, batch, replay)
    return out


def forward_in(trace: StepTrace, tool: str, batch: int, replay: int) -> int:
    return sum(by_category(trace, tool, batch, replay).values())


def step_total(fl: Any, trace: StepTrace, tool: str, batch: int, replay: int) -> int:
    """Forward + backward FLOPs of one step in ``tool``'s convention."""
    backward = at(fl.grad_input, batch, replay) + at(fl.grad_weight, batch, replay)
    if tool == "torch":
        return at(fl.forward, batch, replay) + backward
    return forward_in(trace, tool, batch, replay) + backward // 2


def converted(step: Any, trace: StepTrace, tool: str, batch: int, replay: int) -> Any:
    """A :class:`~costmodel.estimation.StepCost` in ``tool``'s convention."""
    if tool == "torch":
        return step
    return dataclasses.replace(
        step,
        forward_flops=forward_in(trace, tool, batch, replay),
        backward_flops=step.backward_flops // 2,
        backward_input_flops=step.backward_input_flops // 2,
        backward_weight_flops=step.backward_weight_flops // 2,
        grouped_weight_grad_excess_flops=step.grouped_weight_grad_excess_flops // 2,
    )
