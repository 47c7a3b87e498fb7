"""Per-layer facts: where the FLOPs and the saved activations of a step come from.

Ops are grouped by the module that ran them; functional ops written in a
parent's ``forward`` (a residual add, a functional ReLU) are the parent's row.
Saved bytes are the outputs of a layer that some running backward node keeps,
so a frozen prefix shows zero.  A layer run twice in a step (a replay forward)
has one row with both runs added.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from costmodel.memory.graph import needs_grad
from costmodel.trace.records import Lin, StepTrace, StorageKind, at


@dataclass(frozen=True)
class LayerCost:
    name: str
    type: str
    params: int
    trainable_params: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    forward_flops: int
    backward_input_flops: int
    backward_weight_flops: int
    saved_bytes: int
    elementwise_flops: int
    frozen: bool
    """No parameter of the layer trains and no gradient flows through it.  Keeping an
    output for a later layer's backward (the block before a trained stage) is not training."""
    grouped_weight_grad_excess_flops: int = 0
    """Part of ``backward_weight_flops`` that only FlopCounterMode's grouped-conv rule
    counts (:mod:`costmodel.flops`): a depthwise conv's weight gradient at ``groups`` x."""

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


def _shape(dims: tuple[Lin, ...], batch: int, replay: int) -> tuple[int, ...]:
    return tuple(at(d, batch, replay) for d in dims)


def _in_place(op_name: str) -> bool:
    """aten.mul_.Tensor and the like: the op writes its first argument."""
    parts = op_name.split(".")
    return len(parts) > 1 and parts[1].endswith("_") and not parts[1].endswith("__")


def layer_table(trace: StepTrace, plan: Any, batch: int, replay: int = 0) -> list[LayerCost]:
    sel = plan.selection
    types = {m.name: m for m in trace.modules}
    rows: dict[str, dict[str, int]] = {}
    order: list[str] = []
    saved = set(sel.holders)
    flowing = {sid for op in trace.ops for sid, node in zip(op.inputs, op.grad_nodes)
               if needs_grad(sel, node)}  # a gradient flows back into these storages
    for op in trace.ops:
        name = op.module
        if name not in rows:
            rows[name] = dict(fwd=0, gin=0, gw=0, saved=0, ew=0, grad=0, excess=0)
            order.append(name)
        row = rows[name]
        row["fwd"] += at(op.forward_flops, batch, replay)
        row["ew"] += at(op.elementwise_flops, batch, replay)
        for i, (sid, node) in enumerate(zip(op.inputs, op.grad_nodes)):
            if needs_grad(sel, node):
                row["grad"] = 1
                weight = trace.storages[sid].kind is StorageKind.PARAM
                g = op.grad_flops[i] if i < len(op.grad_flops) else (0, 0, 0)
                row["gw" if weight else "gin"] += at(g, batch, replay)
                if weight and i == 1:  # as memory.graph.flops counts it
                    row["excess"] += at(op.grouped_excess, batch, replay)
        written = op.outputs + (op.inputs[:1] if _in_place(op.name) else ())
        row["grad"] |= any(sid in flowing for sid in written)  # in place (dropout): no node
        for sid in op.outputs:
            if sid in saved:
                row["saved"] += at(trace.storages[sid].nbytes, batch, replay)
    out = []
    trainable = sel.trainable
    for name in order:
        m = types.get(name)
        params = m.params if m else 0
        n_train = sum(trace.param_numel[p] for p in (m.param_names if m else ()) if p in trainable)
        shapes = trace.module_shapes.get(name)
        r = rows[name]
        out.append(LayerCost(
            name or "<model>", m.type if m else "", params, n_train,
            _shape(shapes[0], batch, replay) if shapes else (),
            _shape(shapes[1], batch, replay) if shapes else (),
            r["fwd"], r["gin"], r["gw"], r["saved"], r["ew"],
            frozen=n_train == 0 and not r["grad"], grouped_weight_grad_excess_flops=r["excess"]))
    return out
