"""Source kind `noise`: uniform or Gaussian pixel noise, made from a seed at the target's spec.

With `resolution` set, noise is drawn at that resolution and resized (bilinear) to the spec,
which gives smooth, blob-like noise. Deterministic per seed, and prefix-stable: the first n
images of a larger count are the same n images.
"""

from __future__ import annotations

import numpy as np

from dfkd.sources.base import (
    SEED_PROPERTY,
    SourceData,
    SourceKind,
    TargetSpec,
    count_property,
    generate_in_chunks,
)
from dfkd.sources.convert import resize

PROPERTIES = {
    "count": count_property(60000),
    "distribution": {
        "type": "string",
        "enum": ["uniform", "gaussian"],
        "default": "uniform",
        "description": "uniform: every pixel value 0..255 equally likely; gaussian: N(mean, std) clipped to [0, 1].",
    },
    "mean": {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "default": 0.5,
        "description": "Gaussian mean (pixel units, 0..1).",
    },
    "std": {
        "type": "number",
        "minimum": 0,
        "maximum": 10,
        "default": 0.25,
        "description": "Gaussian standard deviation (pixel units).",
    },
    "resolution": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": 4096,
        "default": None,
        "description": "Draw the noise at this size, then resize it to the target's (null: the target's size).",
    },
    "seed": SEED_PROPERTY,
}


def make_noise(
    rng: np.random.Generator, n: int, keep: int, args: dict, spec: TargetSpec
) -> np.ndarray:
    side = args["resolution"] or spec.image_size
    shape = (n, spec.channels, side, side)
    if args["distribution"] == "uniform":
        images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        values = rng.standard_normal(size=shape, dtype=np.float32) * args["std"] + args["mean"]
        images = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    return resize(images[:keep], spec.image_size)  # (keep, C, S, S)


def load(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    images = generate_in_chunks(
        args["count"], args["seed"], lambda rng, n, keep: make_noise(rng, n, keep, args, spec)
    )
    return SourceData(images, None)


KIND = SourceKind(
    name="noise",
    description="Uniform or Gaussian pixel noise made from a seed.",
    properties=PROPERTIES,
    load=load,
    generator=True,
)
