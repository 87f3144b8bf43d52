"""The CIFAR-10 AlexNet of ZSKD (vcl-iisc/ZSKD, model_alex_full.py / model_alex_half.py).

Five convs (5x5, 5x5, 3x3, 3x3, 3x3), each followed by ReLU, and where ZSKD has them local
response norm and 3x3/2 max pooling, then batch norm; two FC layers (ReLU, dropout 0.5, batch
norm) and the linear head. Full: conv 48/128/192/192/128, FC 512/256 (1,659,178 parameters at
3x32x32, K=10). Half: conv 24/64/96/96/64, FC 256/128. The features are the output of the
second FC block (after its batch norm), the deepest embedding before the head.
"""
from __future__ import annotations

import torch
from torch import nn

from dfkd.errors import DfkdError
from dfkd.models.base import Classifier


def _pooled(side: int) -> int:
    return (side - 3) // 2 + 1  # MaxPool2d(3, stride 2), no padding


class AlexNet(Classifier):
    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 convs: tuple[int, ...] = (48, 128, 192, 192, 128), fcs: tuple[int, int] = (512, 256)):
        super().__init__()
        side = _pooled(_pooled(_pooled(image_size)))
        if image_size < 15 or side < 1:
            raise DfkdError(f"AlexNet needs image_size >= 15; got {image_size}.")
        c1, c2, c3, c4, c5 = convs

        def block(cin, cout, kernel, pool):
            layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.ReLU()]
            if pool:
                layers += [nn.LocalResponseNorm(2)] if pool == "lrn" else []
                layers += [nn.MaxPool2d(3, 2)]
            return layers + [nn.BatchNorm2d(cout)]

        self.conv = nn.Sequential(
            *block(in_channels, c1, 5, "lrn"), *block(c1, c2, 5, "lrn"),
            *block(c2, c3, 3, None), *block(c3, c4, 3, None), *block(c4, c5, 3, "pool"),
        )
        f1, f2 = fcs
        self.fc = nn.Sequential(
            nn.Linear(c5 * side * side, f1), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(f1),
            nn.Linear(f1, f2), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(f2),
        )
        self.feature_dim = f2
        self.head = nn.Linear(f2, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))  # (N, f2)


def alexnet(in_channels: int, num_classes: int, image_size: int) -> AlexNet:
    return AlexNet(in_channels, num_classes, image_size, (48, 128, 192, 192, 128), (512, 256))


def alexnet_half(in_channels: int, num_classes: int, image_size: int) -> AlexNet:
    return AlexNet(in_channels, num_classes, image_size, (24, 64, 96, 96, 64), (256, 128))
