"""Batched augmentation of [0, 1] images on the training device (no per-image Python work).

`augment_batch(x, cfg, generator)` takes float images in [0, 1], (B, C, H, W), and returns
new ones of the same shape: a random horizontal flip (`torch.where` over a mask), one
`affine_grid` + `grid_sample` for translation, scaling and rotation together, polarity
inversion, additive Gaussian noise. Normalisation happens afterwards. Every random draw
comes from `generator` (on the images' device), so a seeded batch repeats exactly.

Flips and inversions are exact pixel maps with two outcomes each: with only those on, an
image has at most four *views* (`view_codes`), and `augment_batch_with_views` says which
view each augmented image is, so that a teacher's outputs can be computed once per view
instead of once per batch (dfkd.distill).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch.nn import functional as F

from dfkd.errors import DfkdError

AUGMENT_DEFAULTS: dict[str, Any] = {
    "flip": False,       # random horizontal flips
    "translate": 0.0,    # max shift, fraction of the image size
    "scale": [1.0, 1.0], # zoom range [min, max] (>1 enlarges the content)
    "rotate": 0.0,       # max rotation, degrees
    "invert": 0.0,       # probability of x -> 1 - x
    "noise": 0.0,        # std of Gaussian noise on [0, 1] pixels
}


def augment_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """`cfg` with defaults filled in; unknown keys are refused."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(AUGMENT_DEFAULTS))
    if unknown:
        raise DfkdError(f"unknown augment option(s) {unknown}; known: {sorted(AUGMENT_DEFAULTS)}.")
    merged = {**AUGMENT_DEFAULTS, **cfg}
    merged["scale"] = [float(s) for s in merged["scale"]]
    if len(merged["scale"]) != 2 or not 0 < merged["scale"][0] <= merged["scale"][1]:
        raise DfkdError(f"augment.scale must be [min, max] with 0 < min <= max; got {merged['scale']}.")
    return merged


def augment_active(cfg: Mapping[str, Any] | None) -> bool:
    """Whether `cfg` changes any image (so a teacher must label each augmented batch)."""
    return augment_config(cfg) != AUGMENT_DEFAULTS


VIEW_FLIP, VIEW_INVERT = 1, 2  # bits of a view code


def view_codes(cfg: Mapping[str, Any] | None) -> list[int] | None:
    """The views augmentation can make of an image, as codes (bit VIEW_FLIP: flipped, bit
    VIEW_INVERT: inverted), when flips and inversions are the only options on; else None
    (also when augmentation is off: then there is nothing to choose between)."""
    cfg = augment_config(cfg)
    if not augment_active(cfg) or any(cfg[key] != AUGMENT_DEFAULTS[key] for key in cfg if key not in ("flip", "invert")):
        return None
    flips = [0, VIEW_FLIP] if cfg["flip"] else [0]
    inverts = [VIEW_INVERT] if cfg["invert"] >= 1 else [0, VIEW_INVERT] if cfg["invert"] > 0 else [0]
    return [flip | invert for invert in inverts for flip in flips]


def apply_view(x: torch.Tensor, code: int) -> torch.Tensor:
    """View `code` of [0, 1] images (B, C, H, W): the same values augment_batch makes for it."""
    if code & VIEW_FLIP:
        x = x.flip(-1)
    if code & VIEW_INVERT:
        x = 1 - x
    return x


def augment_batch(x: torch.Tensor, cfg: Mapping[str, Any] | None, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch of [0, 1] images (B, C, H, W): same shape and dtype (`x` itself if all off)."""
    return augment_batch_with_views(x, cfg, generator)[0]


def augment_batch_with_views(x: torch.Tensor, cfg: Mapping[str, Any] | None,
                             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`augment_batch`, and each image's flip/invert view code (B,) int64 (the other options
    are continuous: the code says nothing of them)."""
    cfg = augment_config(cfg)
    B = x.shape[0]
    code = torch.zeros(B, dtype=torch.int64, device=x.device)

    def uniform(*shape: int) -> torch.Tensor:  # U[0, 1) from the batch's generator
        return torch.rand(*shape, generator=generator, device=x.device, dtype=torch.float32)

    # 1. horizontal flip of a random half
    if cfg["flip"]:
        flip = uniform(B).lt(0.5)  # (B,)
        x = torch.where(flip.view(B, 1, 1, 1), x.flip(-1), x)
        code += VIEW_FLIP * flip
    # 2. translate, scale and rotate with one sampling grid (output coords -> input coords)
    lo, hi = cfg["scale"]
    if cfg["translate"] > 0 or cfg["rotate"] > 0 or lo != 1.0 or hi != 1.0:
        angle = (2 * uniform(B) - 1) * math.radians(cfg["rotate"])  # (B,)
        zoom = lo + (hi - lo) * uniform(B)  # (B,)
        shift = (2 * uniform(B, 2) - 1) * (2 * cfg["translate"])  # (B, 2); the image spans 2 units
        cos, sin = angle.cos() / zoom, angle.sin() / zoom  # (B,)
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)  # (B, H, W, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # 3. polarity inversion
    if cfg["invert"] > 0:
        invert = uniform(B).lt(cfg["invert"])  # (B,)
        x = torch.where(invert.view(B, 1, 1, 1), 1 - x, x)
        code += VIEW_INVERT * invert
    # 4. additive Gaussian noise, kept in [0, 1]
    if cfg["noise"] > 0:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = (x + cfg["noise"] * noise).clamp(0, 1)
    return x, code
