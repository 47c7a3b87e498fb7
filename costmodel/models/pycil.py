"""PyCIL's networks (G-U-N/PyCIL at 87cc4110), where they differ from costcl's own in memory.

costcl's ``resnet{n}-cifar`` has PyCIL's blocks (option-A shortcuts, in-place
ReLUs); what PyCIL's wrappers around them do differently is reproduced here,
in costcl's words, over any backbone :func:`~costmodel.models.staged.split`
understands:

* :class:`ConvNet` (convs/cifar_resnet.py:84-152): the forward keeps its stem
  output and every stage's output referenced until it returns and hands back
  the stage maps with the pooled features.  Without a graph (a frozen teacher)
  those maps are what is alive.  It also owns a 10-way ``fc`` it never calls:
  its parameters never get a gradient (so no momentum either).
* :class:`IncrementalNet` (utils/inc_net.py:60-140): ``fc`` grows with the
  tasks (known + new classes wide), so a teacher copied after the previous task
  is that task's width; the output is the convnet's dict plus the logits.
* :class:`DERNet` (utils/inc_net.py:311-375): one convnet per task whose dicts
  are dropped after their features are taken; ``fc`` over all features (their
  width and the classes both grow), ``aux_fc`` over the newest slice.
* :class:`AdaptiveNet` (utils/inc_net.py:750-820, convs/memo_cifar_resnet.py):
  the generalized blocks (stem and every stage but the last) keep their stem
  and stage outputs referenced like the convnet; each specialized block is the
  last stage, pooled; the output also carries the base feature map.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.models.cifar_resnet import OptionABlock
from costmodel.models.staged import Stages

Parts = Callable[[], Stages]


def _pooled(h: torch.Tensor) -> torch.Tensor:
    """``AvgPool2d(8)`` on the 8x8 maps, then ``view``: one average per channel."""
    pooled = F.avg_pool2d(h, h.shape[2:])
    return pooled.view(pooled.size(0), -1)


class _Stem(nn.Module):
    """conv -> bn -> in-place ReLU (-> the backbone's own stem pooling, if any)."""

    def __init__(self, parts: Stages) -> None:
        super().__init__()
        self.conv, self.bn = parts.stem.conv, parts.stem.bn
        self.pool = getattr(parts.stem, "pool", nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.pool(F.relu(self.bn(x), inplace=True))


class Block(nn.Module):
    """ResNetBasicblock (convs/cifar_resnet.py:57-81) over an option-A block's layers: one
    variable carries the branch, so each layer's input is let go as its output arrives
    (without a graph, bn_a's output is gone before bn_b runs).  ``last``: no ReLU after
    the sum (UCIR's last block, :class:`~costmodel.methods.podnet.UcirBlock`)."""

    last = False

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv_a, self.bn_a = block.conv_a, block.bn_a
        self.conv_b, self.bn_b = block.conv_b, block.bn_b
        self.downsample = block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        branch = self.conv_a(x)
        branch = self.bn_a(branch)
        branch = F.relu(branch, inplace=True)
        branch = self.conv_b(branch)
        branch = self.bn_b(branch)
        if self.downsample is not None:
            residual = self.downsample(x)
        out = residual + branch
        return out if self.last else F.relu(out, inplace=True)


def _stage(stage: nn.Module) -> nn.Module:
    """A stage with PyCIL's blocks where they are option-A blocks (others as they are)."""
    if isinstance(stage, nn.Sequential) and all(isinstance(b, OptionABlock) for b in stage):
        return nn.Sequential(*(Block(b) for b in stage))
    return stage


class ConvNet(nn.Module):
    """PyCIL's CifarResNet: ``{'fmaps': stage outputs, 'features': pooled}``."""

    def __init__(self, parts: Stages) -> None:
        super().__init__()
        self.stem = _Stem(parts)
        self.stages = nn.ModuleList(_stage(m) for _, m in parts.stages)
        self.out_dim = parts.feature_dim
        self.fc = nn.Linear(self.out_dim, 10)  # built, never called

    def forward(self, x: torch.Tensor) -> dict:
        x = self.stem(x)  # referenced until the forward returns, as its x
        fmaps, h = [], x
        for stage in self.stages:
            h = stage(h)
            fmaps.append(h)
        return {"fmaps": fmaps, "features": _pooled(h)}


class IncrementalNet(nn.Module):
    """iCaRL's, WA's and Replay's network: a convnet and a classifier of the classes seen."""

    def __init__(self, parts: Parts, classes: int) -> None:
        super().__init__()
        self.convnet = ConvNet(parts())
        self.fc = nn.Linear(self.convnet.out_dim, classes)

    def feature_dim(self, tasks: int) -> int:
        """Width of the features (the NME class means) after ``tasks`` tasks."""
        return self.convnet.out_dim

    def forward(self, x: torch.Tensor) -> dict:
        out = self.convnet(x)
        return {"logits": self.fc(out["features"]), **out}


class _Growing(nn.Module):
    """One branch per task, the older ones frozen in eval mode (der.py:85-94, memo.py:92-108)."""

    fc: nn.Linear
    aux_fc: nn.Linear
    out_dim: int

    def branches(self) -> nn.ModuleList:
        raise NotImplementedError

    def feature_dim(self, tasks: int) -> int:
        """Width of the features (the NME class means) after ``tasks`` tasks."""
        return self.out_dim * tasks

    def train(self, mode: bool = True) -> _Growing:
        super().train(mode)
        for old in self.branches()[:-1]:
            old.eval()
        return self

    def heads(self, features: list[torch.Tensor]) -> dict:
        features = torch.cat(features, 1)
        logits = self.fc(features)
        aux_logits = self.aux_fc(features[:, -self.out_dim:])
        return {"logits": logits, "aux_logits": aux_logits, "features": features}


class DERNet(_Growing):
    def __init__(self, parts: Parts, tasks: int, classes_per_task: int) -> None:
        super().__init__()
        self.convnets = nn.ModuleList(ConvNet(parts()) for _ in range(tasks))
        self.out_dim = self.convnets[0].out_dim
        self.fc = nn.Linear(self.out_dim * tasks, classes_per_task * tasks)
        self.aux_fc = nn.Linear(self.out_dim, classes_per_task + 1)

    def branches(self) -> nn.ModuleList:
        return self.convnets

    def forward(self, x: torch.Tensor) -> dict:
        return self.heads([c(x)["features"] for c in self.convnets])


class _Generalized(nn.Module):
    """GeneralizedResNet_cifar: the stem and every stage but the last."""

    def __init__(self, parts: Stages) -> None:
        super().__init__()
        self.stem = _Stem(parts)
        self.stages = nn.ModuleList(_stage(m) for _, m in parts.stages[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        outs, h = [], x  # x, x_1 referenced until it returns x_2
        for stage in self.stages:
            h = stage(h)
            outs.append(h)
        return h


class _Specialized(nn.Module):
    """SpecializedResNet_cifar: the last stage, pooled."""

    def __init__(self, parts: Stages) -> None:
        super().__init__()
        self.final_stage = _stage(parts.stages[-1][1])

    def forward(self, base_feature_map: torch.Tensor) -> torch.Tensor:
        return _pooled(self.final_stage(base_feature_map))


class AdaptiveNet(_Growing):
    def __init__(self, parts: Parts, tasks: int, classes_per_task: int) -> None:
        super().__init__()
        first = parts()
        self.out_dim = first.feature_dim
        self.generalized = _Generalized(first)
        self.specialized = nn.ModuleList(_Specialized(parts()) for _ in range(tasks))
        self.fc = nn.Linear(self.out_dim * tasks, classes_per_task * tasks)
        self.aux_fc = nn.Linear(self.out_dim, classes_per_task + 1)

    def branches(self) -> nn.ModuleList:
        return self.specialized

    def forward(self, x: torch.Tensor) -> dict:
        base = self.generalized(x)
        out = self.heads([s(base) for s in self.specialized])
        out["base_features"] = base
        return out
