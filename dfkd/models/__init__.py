"""Model registry: architecture key -> builder, and the self-describing model file.

Every model has `.features(x)` -> (N, D) (the penultimate embedding), `.head(f)` -> (N, K)
and `forward(x) == head(features(x))`. A model file (`model.pt`) is a plain dict: `arch`,
`in_channels`, `num_classes`, `image_size`, `mean`, `std`, `state_dict`, `provenance`
(JSON string), loaded with `weights_only=True`. A teacher from outside (`teacher.load`) may
add `format`, `layer`, `features` and `program`; `load_model` rebuilds it through
`dfkd.models.external.model_from_record`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from dfkd.io.artifacts import load_torch
from dfkd.errors import DfkdError
from dfkd.models.external import model_from_record
from dfkd.models.registry import MODELS, build_model
from dfkd.io.provenance import provenance_json

__all__ = ["MODELS", "build_model", "count_parameters", "load_model", "model_record"]

_RECORD_KEYS = ("arch", "in_channels", "num_classes", "image_size", "mean", "std", "state_dict")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_record(
    model: nn.Module,
    arch: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    mean: list[float],
    std: list[float],
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """The dict saved as model.pt (weights on the CPU, contiguous)."""
    return {
        "arch": arch,
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "provenance": provenance_json(provenance),
    }


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its model.pt (on the CPU, in eval mode) and return it with its record."""
    record = load_torch(path)
    missing = [key for key in _RECORD_KEYS if key not in record]
    if missing:
        raise DfkdError(f"{path} is not a dfkd model file: it lacks {missing}. Re-run the rule that makes it.")
    if "format" in record:  # a teacher from outside (dfkd.models.external): same interface, other loader
        return model_from_record(record, str(path)).eval(), record
    if record["arch"] not in MODELS:
        raise DfkdError(f"{path} holds arch '{record['arch']}', unknown to this dfkd; known: {sorted(MODELS)}.")
    model = build_model(record["arch"], record["in_channels"], record["num_classes"], record["image_size"])
    try:
        model.load_state_dict(record["state_dict"])
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # one line for the CLI (torch lists every tensor)
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."
        raise DfkdError(
            f"{path}: its weights do not fit arch '{record['arch']}' at {record['in_channels']}x"
            f"{record['image_size']}x{record['image_size']}, {record['num_classes']} classes ({detail}). "
            "The file is stale or damaged; re-run the rule that makes it."
        ) from exc
    return model.eval(), record
