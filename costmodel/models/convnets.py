"""The small ConvNets of MEMO's memory-agnostic comparison (PyCIL's conv_cifar/conv_imagenet).

``conv2`` (CIFAR): two blocks of 3x3 conv (with bias), batch norm, ReLU and a
2x2 max-pool, 64 channels.  ``conv4`` (ImageNet): a 7x7/2 first block, two 3x3
blocks of 128 channels, a last block to 512.  MEMO's specialized block is the
last block; costcl finds it as the last stage (:mod:`costmodel.models.staged`).
"""
from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.BatchNorm2d(cout),
                         nn.ReLU(), nn.MaxPool2d(2))


class ConvNet(nn.Module):
    def __init__(self, blocks: list[nn.Module], width: int, num_classes: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(x)).flatten(1))


def conv2(num_classes: int = 10, in_channels: int = 3) -> ConvNet:
    return ConvNet([conv_block(in_channels, 64), conv_block(64, 64)], 64, num_classes)


def conv4(num_classes: int = 10, in_channels: int = 3) -> ConvNet:
    return ConvNet([conv_block(in_channels, 128, 7, 2), conv_block(128, 128), conv_block(128, 128),
                    conv_block(128, 512)], 512, num_classes)
