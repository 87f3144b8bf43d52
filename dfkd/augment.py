"""Batched augmentation of [0, 1] images on the training device (no per-image Python work).

`augment_batch(x, cfg, generator)` takes float images in [0, 1], (B, C, H, W), and returns
new ones of the same shape: a random horizontal flip (`torch.where` over a mask), one
`affine_grid` + `grid_sample` for translation, scaling and rotation together, polarity
inversion, additive Gaussian noise, then mixing (`mix_batch`: mixup or CutMix with another
image of the batch). Normalisation happens afterwards. Every random draw comes from
`generator` (on the images' device), so a seeded batch repeats exactly.

Mixing is for students only: a mixed image has no hard label, its target is the teacher's
output on the mixed image itself (dfkd.stages.distill labels every mixed batch online), never an
interpolation of two labels.

Flips and inversions are exact pixel maps with two outcomes each: with only those on, an
image has at most four *views* (`view_codes`), and `augment_batch_with_views` says which
view each augmented image is, so that a teacher's outputs can be computed once per view
instead of once per batch (dfkd.stages.distill). With mixing on as well, the code of a mixed image
carries the bit VIEW_MIXED: only those images need the teacher online; the others are still
views of their rows.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch.nn import functional as F

from dfkd.errors import DfkdError
from dfkd.schema import definition_defaults

AUGMENT_DEFAULTS: dict[str, Any] = definition_defaults("augment")  # the schema's: every augmentation off
MIXES = ("mixup", "cutmix")  # each image is mixed at most once: their p sum to at most 1


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
    for key in MIXES:
        merged[key] = _mix_config(key, merged[key])
    if merged["mixup"]["p"] + merged["cutmix"]["p"] > 1:
        raise DfkdError(f"augment.mixup.p + augment.cutmix.p must be at most 1 (an image is mixed at most once); "
                        f"got {merged['mixup']['p']} + {merged['cutmix']['p']}. Lower one of them.")
    return merged


def _mix_config(key: str, block: Any) -> dict[str, float]:
    """A checked `{p, alpha}` block of augment.mixup / augment.cutmix, defaults filled."""
    if not isinstance(block, Mapping):
        raise DfkdError(f"augment.{key} must be a mapping {{p: 0..1, alpha: > 0}}; got {block!r}.")
    unknown = sorted(set(block) - set(AUGMENT_DEFAULTS[key]))
    if unknown:
        raise DfkdError(f"augment.{key}: unknown option(s) {unknown}; known: ['alpha', 'p'].")
    merged = {**AUGMENT_DEFAULTS[key], **block}
    for name in ("p", "alpha"):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DfkdError(f"augment.{key}.{name} must be a finite number; got {value!r}.")
    p, alpha = float(merged["p"]), float(merged["alpha"])
    if not 0 <= p <= 1:
        raise DfkdError(f"augment.{key}.p must be in [0, 1] (the share of images mixed); got {p}.")
    if not alpha > 0:
        raise DfkdError(f"augment.{key}.alpha must be > 0 (Beta(alpha, alpha) mixing weights); got {alpha}.")
    return {"p": p, "alpha": alpha}


def mixing_active(cfg: Mapping[str, Any] | None) -> bool:
    """Whether mixup or CutMix mixes any image (then only an online teacher can label them)."""
    cfg = augment_config(cfg)
    return any(cfg[key]["p"] > 0 for key in MIXES)


def augment_active(cfg: Mapping[str, Any] | None) -> bool:
    """Whether `cfg` changes any image (so a teacher must label each augmented batch).
    A mixing block with p = 0 changes nothing, whatever its alpha."""
    cfg = augment_config(cfg)
    return mixing_active(cfg) or any(cfg[key] != AUGMENT_DEFAULTS[key] for key in cfg if key not in MIXES)


VIEW_FLIP, VIEW_INVERT = 1, 2  # bits of a view code
VIEW_MIXED = 4  # set by augment_batch_with_views on a mixed image: it is no view of its row
VIEW_BITS = VIEW_FLIP | VIEW_INVERT


def view_codes(cfg: Mapping[str, Any] | None) -> list[int] | None:
    """The views augmentation can make of an image, as codes (bit VIEW_FLIP: flipped, bit
    VIEW_INVERT: inverted), when flips and inversions are the only options on; else None
    (also when augmentation is off: then there is nothing to choose between, and when mixing is
    on: a mixed image is no view of one image)."""
    cfg = augment_config(cfg)
    others = [key for key in cfg if key not in ("flip", "invert", *MIXES)]
    if not augment_active(cfg) or mixing_active(cfg) or any(cfg[key] != AUGMENT_DEFAULTS[key] for key in others):
        return None
    flips = [0, VIEW_FLIP] if cfg["flip"] else [0]
    inverts = [VIEW_INVERT] if cfg["invert"] >= 1 else [0, VIEW_INVERT] if cfg["invert"] > 0 else [0]
    return [flip | invert for invert in inverts for flip in flips]


def without_mixing(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """`cfg` with mixup and CutMix off: the augmentation an image that is not mixed went through."""
    return {**augment_config(cfg), **{key: dict(AUGMENT_DEFAULTS[key]) for key in MIXES}}


def unmixed_view_codes(cfg: Mapping[str, Any] | None) -> list[int] | None:
    """With mixing on, the views an image that is not mixed can take (`view_codes` of the
    rest of `cfg`; [0], the row itself, when nothing else is on); None when mixing is off or
    continuous options are on (then every image needs the teacher online)."""
    if not mixing_active(cfg):
        return None
    rest = without_mixing(cfg)
    return view_codes(rest) if augment_active(rest) else [0]


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
    are continuous: the code says nothing of them), plus VIEW_MIXED on each mixed image."""
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
    # 5. mixup / CutMix with another image of the batch
    if mixing_active(cfg):
        x, mixed = mix_batch_with_mask(x, cfg, generator)
        code += VIEW_MIXED * mixed
    return x, code


def mix_batch(x: torch.Tensor, cfg: Mapping[str, Any] | None, generator: torch.Generator) -> torch.Tensor:
    """`mix_batch_with_mask` without the mask."""
    return mix_batch_with_mask(x, cfg, generator)[0]


def mix_batch_with_mask(x: torch.Tensor, cfg: Mapping[str, Any] | None,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of [0, 1] images (B, C, H, W).

    Each image draws one uniform u: u < cutmix.p gets CutMix, else u < cutmix.p + mixup.p gets
    mixup, else it stays as it is. Its partner is the next image in a random cyclic order of
    the batch (never itself when B > 1). One Beta(alpha, alpha) weight lam per image (not per
    batch): mixup gives lam * x + (1 - lam) * partner (torch.lerp); CutMix pastes the partner's
    pixels in a box of side sqrt(1 - lam) times the image's, centred uniformly and clipped to
    the image.
    Every draw is made for the whole batch whether used or not (fixed shapes: the draws
    depend on the generator alone, and the device never waits for the host). Returns images of
    the same shape and dtype (`x` itself when mixing is off) and the mask (B,) bool of the images
    chosen for mixing (a CutMix box may round to nothing: such an image is counted as mixed).
    """
    cfg = augment_config(cfg)
    p_mix, p_cut = cfg["mixup"]["p"], cfg["cutmix"]["p"]
    B, _, H, W = x.shape
    if p_mix == 0 and p_cut == 0:
        return x, torch.zeros(B, dtype=torch.bool, device=x.device)
    device = x.device

    def uniform(n: int) -> torch.Tensor:  # U[0, 1) from the batch's generator
        return torch.rand(n, generator=generator, device=device, dtype=torch.float32)

    def beta(alpha: float) -> torch.Tensor:  # (B,) ~ Beta(alpha, alpha), as G1 / (G1 + G2)
        gammas = torch._standard_gamma(torch.full((2, B), alpha, device=device), generator=generator)  # (2, B)
        return (gammas[0] / (gammas[0] + gammas[1])).nan_to_num(0.5)  # 0/0 when both underflow (tiny alpha)

    # 1. partners and who mixes how
    order = torch.randperm(B, generator=generator, device=device)  # (B,)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)  # a random cycle through the batch
    other = x[partner]  # (B, C, H, W)
    u = uniform(B)
    use_cut = u < p_cut  # (B,)
    use_mix = ~use_cut & (u < p_cut + p_mix)  # (B,)
    out = x
    # 2. mixup: a convex blend, one pass (lerp with weight 1 returns x exactly: unmixed images stay as they are)
    if p_mix > 0:
        lam = torch.where(use_mix, beta(cfg["mixup"]["alpha"]), 1.0).to(x.dtype).view(B, 1, 1, 1)
        out = torch.lerp(other, x, lam)  # lam * x + (1 - lam) * other
    # 3. CutMix: a box of the partner, built as a (B, H, W) mask
    if p_cut > 0:
        side = (1 - beta(cfg["cutmix"]["alpha"])).sqrt()  # (B,) box side / image side
        h, w = (side * H).round().long(), (side * W).round().long()  # (B,)
        cy, cx = (uniform(B) * H).long(), (uniform(B) * W).long()  # (B,) box centres
        top, left = cy - h // 2, cx - w // 2  # may lie outside: the box is clipped by the comparisons
        rows = torch.arange(H, device=device).view(1, H)
        cols = torch.arange(W, device=device).view(1, W)
        in_rows = (rows >= top.view(B, 1)) & (rows < (top + h).view(B, 1))  # (B, H)
        in_cols = (cols >= left.view(B, 1)) & (cols < (left + w).view(B, 1))  # (B, W)
        box = (in_rows.view(B, H, 1) & in_cols.view(B, 1, W)) & use_cut.view(B, 1, 1)  # (B, H, W)
        out = torch.where(box.view(B, 1, H, W), other, out)
    return out, use_cut | use_mix
