"""The CIFAR-style ResNets that continual-learning code actually trains.

Two families, written to match the public code that the seeds measure:

* ``resnet18-cifar``: Mammoth's and LightCL's ResNet-18: a 3x3 stride-1 stem, no
  max-pool, BasicBlocks [2, 2, 2, 2] with widths 64/128/256/512, 1x1-conv
  shortcuts, functional (not in-place) ReLU and an in-place residual add.  With a
  10-class head it has 11,173,962 parameters (FACTS.md section 1).
* ``resnet{14,20,26,32}-cifar``: PyCIL's ResNet with option-A shortcuts (a
  stride-2 1x1 average pool and zero channels concatenated, no parameters), as
  used by MEMO.  ResNet-32 has 463,504 backbone parameters (FACTS.md section 3).

Both name their last stage so that freezing by name works: ``layer4`` (and its
blocks ``layer4.0``, ``layer4.1``) and ``stage_3``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Mammoth's BasicBlock: conv-bn-relu, conv-bn, += shortcut, relu."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (any input size works: the pool is global)."""

    def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        self._in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._stage(width, 2, 1)
        self.layer2 = self._stage(width * 2, 2, 2)
        self.layer3 = self._stage(width * 4, 2, 2)
        self.layer4 = self._stage(width * 8, 2, 2)
        self.linear = nn.Linear(width * 8, num_classes)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self._in_planes, planes, s))
            self._in_planes = planes
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, out.shape[2])
        return out.view(out.size(0), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


class DownsampleA(nn.Module):
    """Option-A shortcut: subsample by 2 and pad the channels with zeros."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.avg = nn.AvgPool2d(kernel_size=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avg(x)
        return torch.cat((x, x.mul(0)), 1)


class OptionABlock(nn.Module):
    """PyCIL's ResNetBasicblock (in-place ReLUs, residual added out of place)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(planes)
        self.conv_b = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(planes)
        self.downsample = DownsampleA(stride) if stride != 1 or in_planes != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_a(self.conv_a(x)), inplace=True)
        out = self.bn_b(self.conv_b(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return F.relu(residual + out, inplace=True)


class CifarResNetA(nn.Module):
    """PyCIL's CifarResNet (depth 6n+2, widths 16/32/64) with a linear head ``fc``."""

    def __init__(self, depth: int = 32, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("depth must be 6n+2 (14, 20, 26, 32, 44, 56, 110)")
        n = (depth - 2) // 6
        self._in_planes = 16
        self.conv_1_3x3 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(16)
        self.stage_1 = self._stage(16, n, 1)
        self.stage_2 = self._stage(32, n, 2)
        self.stage_3 = self._stage(64, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(OptionABlock(self._in_planes, planes, s))
            self._in_planes = planes
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_1(self.conv_1_3x3(x)), inplace=True)
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
