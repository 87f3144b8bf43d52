"""Source kind `digits`: scikit-learn's 1797 handwritten digits (8x8, values 0..16), a small
real dataset with labels, scaled to 0..255 and resized to the target's spec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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

PROPERTIES = {"count": count_property(None), "seed": SEED_PROPERTY}


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
    keep = subset_indices(len(images), args["count"], args["seed"], "digits")
    if keep is not None:
        images, labels = images[keep], labels[keep]
    return SourceData(to_spec(images, spec), labels, [str(d) for d in range(10)])


KIND = SourceKind(
    name="digits",
    description="scikit-learn's 8x8 handwritten digits (1797 images, labelled).",
    properties=PROPERTIES,
    load=load,
    input_files=input_files,
)
