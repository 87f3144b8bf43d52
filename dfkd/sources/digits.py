"""Source kind `digits`: scikit-learn's 1797 handwritten digits (8x8, values 0..16), a small
real dataset with labels, scaled to 0..255 and resized to the target's spec.

With `jitter` (batched random shifts, zooms, rotations, polarity flips, as in dfkd.augment),
`count` may exceed 1797: each image is a seeded random digit, jittered. That makes a
digit-photo base as large as the training set, the role SVHN plays in the study.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dfkd.errors import DfkdError
from dfkd.sources.base import (
    SEED_PROPERTY,
    SourceData,
    SourceKind,
    TargetSpec,
    count_property,
    package_dirs,
    subset_indices,
)
from dfkd.sources.convert import to_spec

JITTER_PROPERTY = {
    "type": ["object", "null"],
    "default": None,
    "description": "Random jitter of every image (dfkd.augment keys: translate, scale, rotate, "
    "invert, noise); with it, count may exceed the 1797 digits.",
}
PROPERTIES = {"count": count_property(None), "seed": SEED_PROPERTY, "jitter": JITTER_PROPERTY}
CHUNK = 8192


def input_files(args: dict, split: str | None) -> list[Path]:
    paths = [p / "datasets" / "data" / "digits.csv.gz" for p in package_dirs("sklearn")]
    return [p for p in paths if p.is_file()][:1]


def load(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (
        np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    )  # (N, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    if args.get("jitter") is None:
        keep = subset_indices(len(images), args["count"], args["seed"], "digits")
        if keep is not None:
            images, labels = images[keep], labels[keep]
        return SourceData(to_spec(images, spec), labels, [str(d) for d in range(10)])
    count = args["count"] or len(images)
    picks = np.random.default_rng(args["seed"]).integers(0, len(images), count)
    resized = to_spec(images, spec)
    jittered = jitter_images(resized[picks], args["jitter"], args["seed"])
    return SourceData(jittered, labels[picks], [str(d) for d in range(10)])


def jitter_images(images: np.ndarray, jitter: dict, seed: int) -> np.ndarray:
    """uint8 (N, C, S, S) images, each randomly shifted/zoomed/rotated (seeded, chunked)."""
    import torch

    from dfkd.augment import augment_batch, augment_config

    try:
        cfg = augment_config(jitter)
    except DfkdError as exc:
        raise DfkdError(f"digits.jitter: {exc}") from None
    generator = torch.Generator().manual_seed(seed)
    out = np.empty_like(images)
    for start in range(0, len(images), CHUNK):
        batch = torch.from_numpy(images[start : start + CHUNK]).float().div_(255)
        moved = augment_batch(batch, cfg, generator)
        out[start : start + CHUNK] = moved.mul_(255).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


KIND = SourceKind(
    name="digits",
    description="scikit-learn's 8x8 handwritten digits (1797 images, labelled).",
    properties=PROPERTIES,
    load=load,
    input_files=input_files,
)
