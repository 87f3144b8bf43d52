"""CIFAR-style ResNets (3x3 stem, no stem pooling): ResNet-18 (He et al. 2016, as in most KD
work on CIFAR) and ResNet-8 (one basic block per stage, 16/32/64 channels, as in CRD)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dfkd.models.base import Classifier


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Classifier):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for i in range(count):
                layers.append(BasicBlock(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.feature_dim = cin
        self.head = nn.Linear(cin, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))  # (N, D, h, w)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, D)


def resnet18(in_channels: int, num_classes: int, image_size: int) -> ResNet:
    return ResNet(in_channels, num_classes, (64, 128, 256, 512), (2, 2, 2, 2))


def resnet8(in_channels: int, num_classes: int, image_size: int) -> ResNet:
    return ResNet(in_channels, num_classes, (16, 32, 64), (1, 1, 1))
