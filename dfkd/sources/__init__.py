"""Image sources: a registry of loaders keyed by `kind`, each converting to a target's spec.

    load_source({"kind": "noise", "count": 1000}, TargetSpec(channels=1, image_size=32))

This file is the one place that lists the kinds (explicit imports, no registration by
import side effect). Split rule: `split=None` (transfer sources) reads the block's own
`split` where the kind has one; `split="train"|"test"` (a target's own dataset) wins over it.
"""

from __future__ import annotations

from pathlib import Path

from dfkd.sources import digits, fill, imagefolder, noise, patches, procedural, synthesized, torchvision_data
from dfkd.sources.base import (
    SOURCE_KINDS,
    SourceData,
    SourceKind,
    TargetSpec,
    get_source_kind,
    register_source_kind,
    validate_source_config,
)

for _kind in (
    torchvision_data.KIND,
    imagefolder.KIND,
    noise.KIND,
    *procedural.KINDS,
    patches.KIND,
    digits.KIND,
    fill.KIND,
    *synthesized.KINDS,
):
    register_source_kind(_kind)

__all__ = [
    "SOURCE_KINDS",
    "SourceData",
    "SourceKind",
    "TargetSpec",
    "get_source_kind",
    "load_source",
    "source_arg_schema",
    "source_input_files",
    "validate_source_config",
]


def load_source(cfg: dict, spec: TargetSpec, split: str | None = None) -> SourceData:
    """Validate a source block (defaults filled) and load its images at `spec`.

    `split`: None for a transfer source (its block's `split` applies); "train"/"test" for a
    target's own dataset (overrides the block's `split`; generators ignore it).
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    kind, args = validate_source_config(cfg)
    return kind.load(args, spec, split)


def source_arg_schema(kind: str) -> dict:
    """The draft-07 JSON schema of a source block of `kind` (including `kind` itself)."""
    return get_source_kind(kind).schema()


def source_input_files(cfg: dict, split: str | None = None) -> list[Path]:
    """Raw files the block reads (for provenance hashing); [] for generators and for
    datasets not on disk yet (loading then says where it looked and how to get them)."""
    kind, args = validate_source_config(cfg)
    return list(kind.input_files(args, split))
