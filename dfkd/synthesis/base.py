"""What every synthesiser shares: the target's spec and how the teacher sees an image.

A synthesiser makes images *from the teacher* for given classes, one batch at a time:

    synthesize_batch(teacher, classes, spec, settings, generator, device)
        -> (images uint8 [n, C, S, S], soft_targets float32 [n, K])

`classes` (int64 [n]) is the class each image is made for; `generator` is a CPU
torch.Generator seeded for this batch alone, so that a batch is the same whatever came before
it (resumable runs). The teacher sees an optimised image exactly as dfkd feeds it a stored
uint8 image: `x / 255` in [0, 1], then `(x - mean) / std` with the teacher file's mean and
std (`dfkd.training.normalize`, as `features` does). A synthesiser optimises x in [0, 1]
and returns `quantize(x)`: the stored bytes are what was optimised, rounded to uint8.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SynthesisSpec:
    """The teacher's input and output: what a synthesiser must make, and how to normalise it."""

    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def teacher_logits(teacher: "torch.nn.Module", x: "torch.Tensor", spec: SynthesisSpec) -> "torch.Tensor":
    """The teacher's logits (N, K) of images x (N, C, S, S) in [0, 1], normalised as dfkd does."""
    from dfkd.training import standardize

    return teacher(standardize(x, spec.mean, spec.std))


def quantize(x: "torch.Tensor") -> "torch.Tensor":
    """[0, 1] float images -> uint8, as stored (round to nearest; uint8 / 255 reads them back)."""
    import torch

    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8)
