"""Source kind `patches`: random crops at random scales from a few large natural photos, our
offline stand-in for a natural-image transfer set.

Default photos (`photos: bundled`): the natural photographs shipped inside scikit-image
(`skimage/data/`: astronaut, camera, coffee, chelsea, rocket, ...; synthetic images such as
the colour wheel, logo, chessboards and phantom are left out, as is anything under 256 px) and
scikit-learn's two sample images (china.jpg, flower.jpg, the files `load_sample_images` reads).

A crop's side is a fraction `scale` of its photo's short side; crops are resized to the spec
with `torchvision.ops.roi_align` in batches, on a per-photo pyramid of halvings so that every
output pixel averages 2x2 samples of a level no more than 2x finer (antialiased, and fast).
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
    generate_in_chunks,
    package_dirs,
)
from dfkd.sources.convert import to_channels
from dfkd.sources.imagefolder import PROPERTIES as IMAGEFOLDER_PROPERTIES
from dfkd.sources.imagefolder import list_images

# Natural photographs among scikit-image's bundled data files.
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
MIN_PHOTO_SIDE = 256

PROPERTIES = {
    "photos": {
        "anyOf": [
            {"type": "string", "const": "bundled"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
        ],
        "default": "bundled",
        "description": "Image files or folders to crop from, or 'bundled' (scikit-image and scikit-learn photos).",
    },
    "count": count_property(60000),
    "scale": {
        "type": "array",
        "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "minItems": 2,
        "maxItems": 2,
        "default": [0.05, 0.5],
        "description": "[min, max] crop side as a fraction of the photo's short side.",
    },
    "invert": {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "default": 0.0,
        "description": "Probability of inverting a crop's polarity.",
    },
    "flip": {
        "type": "boolean",
        "default": True,
        "description": "Flip half of the crops horizontally.",
    },
    "seed": SEED_PROPERTY,
}


def bundled_photos() -> list[Path]:
    """Paths of the default photos that this installation has (>= 256 px short side)."""
    from PIL import Image

    candidates = [p / "data" / n for p in package_dirs("skimage") for n in SKIMAGE_PHOTOS]
    candidates += [
        p / "datasets" / "images" / n for p in package_dirs("sklearn") for n in SKLEARN_PHOTOS
    ]
    photos = []
    for path in candidates:
        if path.is_file():
            with Image.open(path) as image:  # reads the header only
                if min(image.size) >= MIN_PHOTO_SIDE:
                    photos.append(path)
    return photos


def photo_paths(args: dict) -> list[Path]:
    if args["photos"] == "bundled":
        photos = bundled_photos()
        if not photos:
            raise DfkdError(
                "No bundled photos found in scikit-image / scikit-learn; install scikit-image and "
                "scikit-learn, or list your own under `photos`."
            )
        return photos
    photos = []
    extensions = IMAGEFOLDER_PROPERTIES["extensions"]["default"]
    for entry in args["photos"]:
        path = Path(entry)
        if path.is_dir():
            photos += list_images(path, extensions)
        elif path.is_file():
            photos.append(path)
        else:
            raise DfkdError(f"patches: photo {path} does not exist. Fix the `photos` list.")
    if not photos:
        raise DfkdError(f"patches: no image files in {args['photos']}.")
    return photos


def _pyramid(path: Path, channels: int) -> list:
    """Float tensors (1, C, H/2^l, W/2^l) of one photo, halved until the short side < 16."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), np.uint8).transpose(2, 0, 1)[None]
    except (OSError, ValueError, SyntaxError) as exc:
        raise DfkdError(
            f"patches: {path} cannot be decoded as an image ({exc}). Remove it from `photos`."
        ) from exc
    array = to_channels(np.ascontiguousarray(array), channels)  # (1, C, H, W)
    levels = [torch.from_numpy(array).float()]
    while min(levels[-1].shape[2:]) >= 32:
        levels.append(F.avg_pool2d(levels[-1], 2, ceil_mode=False))
    return levels


def make_patches(
    rng: np.random.Generator, n: int, keep: int, args: dict, spec: TargetSpec, pyramids: list
) -> np.ndarray:
    """Draw the parameters of `n` crops, render the first `keep`: (keep, C, S, S) uint8."""
    import torch
    from torchvision.ops import roi_align

    size = spec.image_size
    # 1. Draw every crop's parameters (independent of how crops are grouped below).
    photo = rng.integers(0, len(pyramids), n)
    frac = rng.uniform(args["scale"][0], args["scale"][1], n)
    where = rng.random((n, 2))
    flip = (rng.random(n) < 0.5) & args["flip"]
    invert = rng.random(n) < args["invert"]
    heights = np.array([p[0].shape[2] for p in pyramids])[photo]
    widths = np.array([p[0].shape[3] for p in pyramids])[photo]
    side = np.maximum(frac * np.minimum(heights, widths), 1.0)  # crop side, level-0 pixels
    x0, y0 = where[:, 0] * (widths - side), where[:, 1] * (heights - side)
    # 2. Pick the pyramid level where the crop spans [size, 2*size) pixels.
    level = np.floor(np.log2(np.maximum(side / size, 1.0))).astype(np.int64)
    photo, level, flip, invert = photo[:keep], level[:keep], flip[:keep], invert[:keep]
    # 3. Crop and resize each (photo, level) group in one roi_align call.
    out = np.empty((keep, spec.channels, size, size), np.uint8)
    boxes_all = np.stack([x0, y0, x0 + side, y0 + side], axis=1)[:keep]
    with torch.no_grad():
        for p in np.unique(photo):
            levels = pyramids[p]
            chosen = np.minimum(level, len(levels) - 1)
            for lv in np.unique(chosen[photo == p]):
                rows = np.flatnonzero((photo == p) & (chosen == lv))
                boxes = torch.zeros((len(rows), 5), dtype=torch.float32)
                boxes[:, 1:] = torch.from_numpy(boxes_all[rows]).float()
                crops = roi_align(
                    levels[lv],
                    boxes,
                    output_size=(size, size),
                    spatial_scale=1.0 / 2**lv,
                    sampling_ratio=2,
                    aligned=True,
                )
                out[rows] = crops.round_().clamp_(0, 255).to(torch.uint8).numpy()
    # 4. Flips and polarity inversions.
    out[flip] = out[flip][..., ::-1]
    out[invert] = 255 - out[invert]
    return out


def photo_pyramids(args: dict, spec: TargetSpec) -> list:
    """The pyramids of every photo of a block: decoded once, cropped by many `make_patches`
    calls (the `fill` stage draws batch after batch)."""
    return [_pyramid(path, spec.channels) for path in photo_paths(args)]


def input_files(args: dict, split: str | None) -> list[Path]:
    return photo_paths(args)


def load(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    low, high = args["scale"]
    if low > high:
        raise DfkdError(f"patches: scale {args['scale']} has min > max; write it as [min, max].")
    pyramids = [_pyramid(path, spec.channels) for path in photo_paths(args)]
    images = generate_in_chunks(
        args["count"],
        args["seed"],
        lambda rng, n, keep: make_patches(rng, n, keep, args, spec, pyramids),
    )
    return SourceData(images, None)


KIND = SourceKind(
    name="patches",
    description="Random crops at random scales from large natural photos.",
    properties=PROPERTIES,
    load=load,
    input_files=input_files,
    generator=True,
)
