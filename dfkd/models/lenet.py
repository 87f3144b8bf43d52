"""LeNet-5 as in ZSKD (Nayak et al. 2019) and DAFL, with its half and quarter students.

conv(c1, 5x5) -> ReLU -> maxpool 2 -> conv(c2, 5x5) -> ReLU -> maxpool 2 -> fc(f1) -> fc(f2) -> fc(K).
At 1x32x32 and K=10: lenet5 has 61,706 parameters, lenet5_half (conv1/conv2 halved) 35,820,
lenet5_quarter (every layer halved) 15,738.

lenet5_bn puts a BatchNorm2d between each conv and its ReLU (the convs lose their bias, which
the BatchNorm's shift replaces): a teacher with the stored batch statistics that DeepInversion
(dfkd.synthesis.inversion) matches, at LeNet-5's cost; 61,728 parameters at 1x32x32 and K=10.
"""
from __future__ import annotations

import torch
from torch import nn

from dfkd.errors import DfkdError
from dfkd.models.base import Classifier


class LeNet5(Classifier):
    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 widths: tuple[int, int, int, int] = (6, 16, 120, 84), batchnorm: bool = False):
        super().__init__()
        c1, c2, f1, f2 = widths
        side = ((image_size - 4) // 2 - 4) // 2  # spatial size after the two conv+pool stages
        if side < 1:
            raise DfkdError(f"LeNet-5 needs image_size >= 16; got {image_size}.")
        def stage(cin: int, cout: int) -> list[nn.Module]:
            if batchnorm:
                return [nn.Conv2d(cin, cout, 5, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
            return [nn.Conv2d(cin, cout, 5), nn.ReLU(), nn.MaxPool2d(2)]

        self.conv = nn.Sequential(*stage(in_channels, c1), *stage(c1, c2))
        self.fc = nn.Sequential(nn.Linear(c2 * side * side, f1), nn.ReLU(), nn.Linear(f1, f2), nn.ReLU())
        self.feature_dim = f2
        self.head = nn.Linear(f2, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))  # (N, f2)


def lenet5(in_channels: int, num_classes: int, image_size: int) -> LeNet5:
    return LeNet5(in_channels, num_classes, image_size, (6, 16, 120, 84))


def lenet5_bn(in_channels: int, num_classes: int, image_size: int) -> LeNet5:
    return LeNet5(in_channels, num_classes, image_size, (6, 16, 120, 84), batchnorm=True)


def lenet5_half(in_channels: int, num_classes: int, image_size: int) -> LeNet5:
    return LeNet5(in_channels, num_classes, image_size, (3, 8, 120, 84))


def lenet5_quarter(in_channels: int, num_classes: int, image_size: int) -> LeNet5:
    return LeNet5(in_channels, num_classes, image_size, (3, 8, 60, 42))
