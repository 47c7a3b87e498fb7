"""The LightCL talk's generalizability metrics (the LightCL talk, Eq. 1-2).

Train task T-1, then task T (plain fine-tuning).  For each layer i, put back
its weights from after task T-1, keep every other layer from after task T,
and measure

* memory stability ``MS_i = a_{T-1}(theta^new_i) - a_{T-1}(theta^T)``: how much of
  the old task this layer's new weights forgot;
* learning plasticity ``LP_i = a_T(theta^new_i) - a_T(theta^T)``: how much of the
  new task needed this layer's new weights.

A layer whose old weights serve both tasks (small MS, LP not below minus the
tolerance) generalizes; LightCL freezes the generalizing lower layers.  The
suggested freeze point is the first layer, from the input, that does not.
Accuracies are TIL (argmax inside the task's logits) unless asked otherwise:
after fine-tuning, CIL accuracy on the old task is near zero for any layer.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from costmodel.models.registry import head_name
from costmodel.scenario import Scenario
from lightcl.data import TaskData
from lightcl.trainer import Trainer


@dataclass
class LayerScore:
    layer: str
    params: int
    ms: float
    lp: float
    generalizes: bool


@dataclass
class Generalizability:
    layers: list[LayerScore]
    old_accuracy: float
    new_accuracy: float
    metric: str
    tolerance: float

    @property
    def suggested_train_from(self) -> str | None:
        for score in self.layers:
            if not score.generalizes:
                return score.layer
        return None

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "tolerance": self.tolerance,
                "old_task_accuracy": self.old_accuracy, "new_task_accuracy": self.new_accuracy,
                "layers": [vars(s) for s in self.layers],
                "suggested_train_from": self.suggested_train_from}


def layers_of(net: nn.Module) -> list[str]:
    """Blocks in forward order: each stage's blocks, the other top-level parts, the head."""
    out = []
    for name, child in net.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, nn.Sequential) and len(child) > 1:
            out += [f"{name}.{i}" for i, _ in enumerate(child)]
        else:
            out.append(name)
    return out


def analyze(s: Scenario, data: TaskData, device: str = "cpu", metric: str = "til",
            tolerance: float = 0.01, progress: Any = None) -> Generalizability:
    s = s.replace(method="sgd", options={})
    trainer = Trainer(s, data, device, progress=progress)
    after_old, after_new = run_two(trainer)
    net = trainer.net

    def accuracies(state: dict[str, torch.Tensor]) -> tuple[float, float]:
        net.load_state_dict(state)
        cil, til = trainer.evaluate(1)
        acc = til if metric == "til" else cil
        return acc[0], acc[1]

    base_old, base_new = accuracies(after_new)
    scores = []
    head = head_name(net)
    for layer in layers_of(net):
        mixed = dict(after_new)
        prefix = layer + "."
        for k in mixed:
            if k.startswith(prefix):
                mixed[k] = after_old[k]
        old, new = accuracies(mixed)
        ms, lp = old - base_old, new - base_new
        params = sum(p.numel() for n, p in net.named_parameters() if n.startswith(prefix))
        scores.append(LayerScore(layer, params, ms, lp,
                                 layer != head and ms <= tolerance and lp >= -tolerance))
    net.load_state_dict(after_new)
    return Generalizability(scores, base_old, base_new, metric, tolerance)


def run_two(trainer: Trainer) -> tuple[dict, dict]:
    """Tasks 0 and 1 of plain fine-tuning; the weights after each."""
    snapshots = []
    for task in range(2):
        for phase in trainer._phases(task):
            trainer.train_phase(task, phase, None)
        snapshots.append(copy.deepcopy(trainer.net.state_dict()))
    return snapshots[0], snapshots[1]
