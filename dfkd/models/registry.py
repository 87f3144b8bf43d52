"""The architecture registry: key -> builder (in_channels, num_classes, image_size) -> nn.Module.

Below both the model files (`dfkd.models`) and the teachers from outside
(`dfkd.models.external`), which build dfkd architectures by key.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from dfkd.errors import DfkdError
from dfkd.models.alexnet import alexnet, alexnet_half
from dfkd.models.lenet import lenet5, lenet5_bn, lenet5_half, lenet5_quarter
from dfkd.models.resnet import resnet8, resnet18

MODELS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "lenet5": lenet5,
    "lenet5_bn": lenet5_bn,
    "lenet5_half": lenet5_half,
    "lenet5_quarter": lenet5_quarter,
    "alexnet": alexnet,
    "alexnet_half": alexnet_half,
    "resnet18": resnet18,
    "resnet8": resnet8,
}


def build_model(arch: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """A freshly initialised model (initialisation draws from torch's global RNG)."""
    if arch not in MODELS:
        raise DfkdError(f"unknown model arch '{arch}'; known: {sorted(MODELS)}.")
    return MODELS[arch](in_channels, num_classes, image_size)
