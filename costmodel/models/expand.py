"""Networks that grow with the tasks, as the expansion methods build them.

* :class:`ExpandNet` (DER, Yan et al. CVPR 2021; PyCIL's DERNet): one full
  backbone per task; the features of all are concatenated for the classifier,
  an auxiliary head sees the newest backbone only.  Old backbones are frozen and
  kept in eval mode.
* :class:`MemoNet` (MEMO, Zhou et al. ICLR 2023; PyCIL's AdaptiveNet): the
  generalized blocks (all stages but the last) are shared; each task adds a copy
  of the last stage (the specialized block).
* :class:`ProgressiveNet` (PNN, Rusu et al. 2016): one column per task; before
  every stage after the first, a 1x1 convolution maps the previous stage's
  outputs of all older columns into the new column (the lateral adapters);
  one head per task.

Each takes the number of tasks seen so far; the step at task t runs a network
built for t.  The classifier covers every class of the dataset from the start
(the final task's head), which the last task really has.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from costmodel.models.staged import GlobalPool, Stages

Parts = Callable[[], Stages]
"""Builds a fresh model and splits it: every backbone, block or column is its own copy."""


class Backbone(nn.Module):
    """stem -> stages -> pooled features."""

    def __init__(self, parts: Stages) -> None:
        super().__init__()
        self.pool_dim = parts.feature_dim
        self.stem = parts.stem
        self.stages = nn.Sequential(*(m for _, m in parts.stages))
        self.pool = GlobalPool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))


class _Expanding(nn.Module):
    """What DER's and MEMO's networks share: one branch per task, of which only the newest
    trains (older ones stay in eval mode, as PyCIL freezes them), and two heads over the
    branches' features (``fc``: all of them; ``aux_fc``: the newest, new classes + 'old')."""

    fc: nn.Linear
    aux_fc: nn.Linear

    def branches(self) -> nn.ModuleList:
        raise NotImplementedError

    def train(self, mode: bool = True) -> _Expanding:
        super().train(mode)
        for old in self.branches()[:-1]:
            old.eval()
        return self

    def heads(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(torch.cat(feats, 1)), self.aux_fc(feats[-1])


class ExpandNet(_Expanding):
    def __init__(self, parts: Parts, tasks: int, classes: int, new_classes: int) -> None:
        super().__init__()
        self.backbones = nn.ModuleList(Backbone(parts()) for _ in range(tasks))
        d = self.backbones[0].pool_dim
        self.fc = nn.Linear(d * tasks, classes)
        self.aux_fc = nn.Linear(d, new_classes + 1)

    def branches(self) -> nn.ModuleList:
        return self.backbones

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads([b(x) for b in self.backbones])


class MemoNet(_Expanding):
    def __init__(self, parts: Parts, tasks: int, classes: int, new_classes: int) -> None:
        super().__init__()
        first = parts()
        d = first.feature_dim
        self.generalized = nn.Sequential(first.stem, *(m for _, m in first.stages[:-1]))
        lasts = [first.stages[-1][1]] + [parts().stages[-1][1] for _ in range(tasks - 1)]
        self.specialized = nn.ModuleList(nn.Sequential(last, GlobalPool()) for last in lasts)
        self.fc = nn.Linear(d * tasks, classes)
        self.aux_fc = nn.Linear(d, new_classes + 1)

    def branches(self) -> nn.ModuleList:
        return self.specialized

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.generalized(x)
        return self.heads([s(base) for s in self.specialized])


class _Column(nn.Module):
    def __init__(self, parts: Stages, index: int, channels: list[int], classes: int) -> None:
        super().__init__()
        self.stem = parts.stem
        self.stages = nn.ModuleList(m for _, m in parts.stages)
        # laterals[s] feeds stage s+1 from the outputs of stage s of older columns
        self.laterals = nn.ModuleList(
            nn.Conv2d(c * index, c, 1, bias=False) for c in channels[:-1]) if index else None
        self.pool = GlobalPool()
        self.head = nn.Linear(parts.feature_dim, classes)


class ProgressiveNet(nn.Module):
    def __init__(self, parts: Parts, tasks: int, classes_per_task: int) -> None:
        super().__init__()
        columns = [parts() for _ in range(tasks)]
        channels = stage_channels(columns[0])
        self.columns = nn.ModuleList(
            _Column(c, k, channels, classes_per_task) for k, c in enumerate(columns))

    def train(self, mode: bool = True) -> ProgressiveNet:
        super().train(mode)
        for old in self.columns[:-1]:
            old.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the newest column (its task's head)."""
        outputs: list[list[torch.Tensor]] = []  # per column, per stage
        for k, col in enumerate(self.columns):
            h = col.stem(x)
            mine = []
            for s, stage in enumerate(col.stages):
                if s and k:
                    h = h + col.laterals[s - 1](torch.cat([outputs[j][s - 1] for j in range(k)], 1))
                h = stage(h)
                mine.append(h)
            outputs.append(mine)
        return self.columns[-1].head(self.columns[-1].pool(outputs[-1][-1]))


def stage_channels(parts: Stages) -> list[int]:
    """Output channels of each stage: its last block's last batch norm."""
    out = []
    for _, stage in parts.stages:
        norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
        out.append(norms[-1].num_features)
    return out
