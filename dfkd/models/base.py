"""The shape every dfkd model has: `features(x)` -> [N, D], `head(f)` -> [N, K]."""
from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """A classifier split at its penultimate layer.

    Subclasses define `features(x)` (the deepest embedding before the final linear layer,
    the one the Hausdorff distance and the feature files use), set `feature_dim` and a linear
    `head`. `forward(x) == head(features(x))`.
    """

    feature_dim: int
    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, K)
