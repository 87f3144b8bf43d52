"""Convert uint8 image batches to a target's spec: channels, square crop, size.

The one place where sources change channels or size, so that every source is converted the
same way: RGB to grey with the ITU-R 601 luma weights (as PIL and torchvision do), grey to RGB
by repetition, non-square images centre-cropped to a square, then an antialiased bilinear
resize done with torch in chunks (bounded memory). Always returns uint8, C-contiguous,
writable.
"""

from __future__ import annotations

import numpy as np

from dfkd.errors import DfkdError

LUMA = (0.299, 0.587, 0.114)
_CHUNK_ELEMENTS = 1 << 24  # floats per resize chunk (64 MB of float32)


def to_spec(images: np.ndarray, spec, crop: bool = True) -> np.ndarray:
    """Convert uint8 (N, C, H, W) images (C = 1 or 3) to (N, spec.channels, S, S).

    `crop`: centre-crop non-square images to a square first (else they are stretched).
    """
    _check_batch(images)
    if not images.flags.writeable:  # e.g. np.frombuffer over file bytes: return an owned copy
        images = images.copy()
    if images.shape[1] > spec.channels:  # reduce channels before resizing: less work
        images = to_channels(images, spec.channels)
    if crop:
        images = center_crop_square(images)
    images = resize(images, spec.image_size)
    images = to_channels(images, spec.channels)
    return np.ascontiguousarray(images)


def _check_batch(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise DfkdError(
            f"Expected uint8 images of shape (N, C, H, W); got "
            f"{getattr(images, 'dtype', type(images))} {getattr(images, 'shape', '')}."
        )
    if images.shape[1] not in (1, 3):
        raise DfkdError(
            f"Images have {images.shape[1]} channels; only 1 (grey) or 3 (RGB) convert."
        )


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Grey (N,1,H,W) <-> RGB (N,3,H,W); returns the input unchanged when it already fits."""
    _check_batch(images)
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.ascontiguousarray(np.repeat(images, 3, axis=1))
    if have == 3 and channels == 1:
        out = np.empty((images.shape[0], 1) + images.shape[2:], np.uint8)
        step = max(1, _CHUNK_ELEMENTS // max(1, images[0].size))
        weights = np.asarray(LUMA, np.float32).reshape(1, 3, 1, 1)
        for start in range(0, len(images), step):
            chunk = images[start : start + step].astype(np.float32)  # (n, 3, H, W)
            grey = (chunk * weights).sum(axis=1, keepdims=True)  # (n, 1, H, W)
            out[start : start + step] = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return out
    raise DfkdError(f"Cannot convert {have} channels to {channels}; use 1 or 3.")


def center_crop_square(images: np.ndarray) -> np.ndarray:
    """Crop the centre square of (N, C, H, W) images (a view when H != W)."""
    h, w = images.shape[2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return images[:, :, top : top + side, left : left + side]


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize of uint8 (N, C, H, W) to (N, C, size, size), in chunks."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return np.ascontiguousarray(images)
    out = np.empty((n, c, size, size), np.uint8)
    per_image = c * max(h * w, size * size)
    step = max(1, _CHUNK_ELEMENTS // per_image)
    with torch.no_grad():
        for start in range(0, n, step):
            chunk = np.ascontiguousarray(images[start : start + step])  # (n, C, H, W)
            if not chunk.flags.writeable:
                chunk = chunk.copy()
            chunk = torch.from_numpy(chunk).float()
            scaled = F.interpolate(
                chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            out[start : start + step] = scaled.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out
