"""A classifier seen as stem -> stages -> pooling -> linear head.

Methods that grow or share parts of a network (DER's backbones, MEMO's
generalized and specialized blocks, PNN's columns) need that split.  MEMO calls
the last stage "specialized" and everything before it "generalized"; the split
comes from the model, not from a table.  ResNets (costcl's CIFAR ones and
torchvision's) have it; other models get a one-line error from the methods that
need it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from costmodel.errors import CostclError


class Stem(nn.Module):
    """conv -> bn -> relu (-> max-pool): everything before the first stage."""

    def __init__(self, conv: nn.Module, bn: nn.Module, pool: nn.Module | None = None) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn
        self.pool = pool if pool is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.bn(self.conv(x))))


class GlobalPool(nn.Module):
    """Global average pooling and flattening: a stage's maps to a feature vector."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


@dataclass
class Stages:
    stem: nn.Module
    stages: list[tuple[str, nn.Module]]
    head: nn.Linear

    @property
    def feature_dim(self) -> int:
        return self.head.in_features


def split(model: nn.Module, needed_by: str = "this method") -> Stages:
    """The stem, the ordered stages and the head of a ResNet-style classifier."""
    from costmodel.models.cifar_resnet import CifarResNet18, CifarResNetA
    from costmodel.models.convnets import ConvNet

    if isinstance(model, CifarResNet18):
        names = ["layer1", "layer2", "layer3", "layer4"]
        return Stages(Stem(model.conv1, model.bn1), [(n, getattr(model, n)) for n in names],
                      model.linear)
    if isinstance(model, CifarResNetA):
        names = ["stage_1", "stage_2", "stage_3"]
        return Stages(Stem(model.conv_1_3x3, model.bn_1), [(n, getattr(model, n)) for n in names],
                      model.fc)
    if isinstance(model, ConvNet):  # no stem: every conv block is a stage
        return Stages(nn.Identity(), [(f"blocks.{i}", b) for i, b in enumerate(model.blocks)],
                      model.fc)
    if all(hasattr(model, a) for a in ("conv1", "bn1", "maxpool", "layer4", "fc")):  # torchvision
        names = ["layer1", "layer2", "layer3", "layer4"]
        return Stages(Stem(model.conv1, model.bn1, model.maxpool),
                      [(n, getattr(model, n)) for n in names], model.fc)
    raise CostclError(f"{needed_by} needs a ResNet-style model (stem, stages, linear head); "
                      f"{type(model).__name__} is not one: use resnet18-cifar, resnet32-cifar "
                      "or a torchvision ResNet")
