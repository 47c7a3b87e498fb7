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

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


def _shape(dims: tuple[Lin, ...], batch: int, replay: int) -> tuple[int, ...]:
    return tuple(at(d, batch, replay) for d in dims)


def layer_table(trace: StepTrace, plan: Any, batch: int, replay: int = 0) -> list[LayerCost]:
    sel = plan.selection
    types = {m.name: m for m in trace.modules}
    rows: dict[str, dict[str, int]] = {}
    order: list[str] = []
    saved = set(sel.holders)
    for op in trace.ops:
        name = op.module
        if name not in rows:
            rows[name] = dict(fwd=0, gin=0, gw=0, saved=0, ew=0)
            order.append(name)
        row = rows[name]
        row["fwd"] += at(op.forward_flops, batch, replay)
        row["ew"] += at(op.elementwise_flops, batch, replay)
        for sid, node, g in zip(op.inputs, op.grad_nodes, op.grad_flops):
            if needs_grad(sel, node):
                key = "gw" if trace.storages[sid].kind is StorageKind.PARAM else "gin"
                row[key] += at(g, batch, replay)
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
            frozen=r["gin"] == 0 and r["gw"] == 0 and r["saved"] == 0))
    return out
