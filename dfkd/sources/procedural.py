"""Source kinds `shapes` and `strokes`: procedural synthetic renders, our offline stand-ins
for synthetic datasets such as CLEVR and Mid-Air.

- `shapes`: filled or outlined ellipses, rectangles and regular polygons (3 to 6 sides,
  stretched and rotated) in random colours on plain or gradient backgrounds.
- `strokes`: each image is one of: random strokes (quadratic Bezier curves and lines of random
  width), stripes (sharp or sinusoidal), a rotated checkerboard, or metaball blobs.

Rendering is vectorised numpy over batches of images with signed distances in pixel units and
a one-pixel soft edge (antialiasing), drawn directly at the target's spec. All random
parameters of a chunk are drawn first, then rendered in memory-bounded sub-batches, so the
output depends only on the seed (and is prefix-stable, see `generate_in_chunks`).
"""

from __future__ import annotations

import numpy as np

from dfkd.errors import DfkdError
from dfkd.sources.base import (
    SEED_PROPERTY,
    SourceData,
    SourceKind,
    TargetSpec,
    count_property,
    generate_in_chunks,
)

_PIXELS_PER_BATCH = 1 << 21  # images x pixels rendered at once (bounds float32 temporaries)
_BEZIER_POINTS = 9  # points along each stroke (8 segments)


# ---------------------------------------------------------------------------- helpers
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: y (1, S, 1) and x (1, 1, S)."""
    centres = np.arange(size, dtype=np.float32) + 0.5
    return centres.reshape(1, size, 1), centres.reshape(1, 1, size)


def _col(values: np.ndarray) -> np.ndarray:
    """Per-image parameters (n,) as (n, 1, 1) for broadcasting over pixels."""
    return values.astype(np.float32).reshape(-1, 1, 1)


def _colours(rng: np.random.Generator, shape: tuple[int, ...], channels: int) -> np.ndarray:
    colours = rng.random(shape + (3,), dtype=np.float32)  # always draw 3: same stream for 1 or 3
    return colours[..., :channels]


def _soft(distance: np.ndarray) -> np.ndarray:
    """Coverage of a pixel from a signed distance (negative inside), 1-pixel soft edge."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def _blend(images: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """images (n, C, S, S) += alpha (n, S, S) * (colour (n, C) - images), in place."""
    images += alpha[:, None] * (colour[:, :, None, None] - images)


def _backgrounds(p: dict, sl: slice, size: int) -> np.ndarray:
    """Plain or linear-gradient backgrounds (n, C, S, S) from parameters of images `sl`."""
    y, x = _grid(size)
    angle = _col(p["bg_angle"][sl])
    t = ((x - size / 2) * np.cos(angle) + (y - size / 2) * np.sin(angle)) / size + 0.5  # (n,S,S)
    t = np.clip(t, 0, 1) * _col(p["bg_gradient"][sl])
    c0, c1 = p["bg_from"][sl], p["bg_to"][sl]  # (n, C)
    return c0[:, :, None, None] + (c1 - c0)[:, :, None, None] * t[:, None]


def _background_params(rng: np.random.Generator, n: int, channels: int) -> dict:
    return {
        "bg_from": _colours(rng, (n,), channels),
        "bg_to": _colours(rng, (n,), channels),
        "bg_angle": rng.uniform(0, 2 * np.pi, n),
        "bg_gradient": rng.random(n) < 0.5,
    }


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def _render_batched(n: int, size: int, render) -> np.ndarray:
    """Call render(slice) over sub-batches of images; stack the uint8 results."""
    step = max(1, _PIXELS_PER_BATCH // (size * size))
    return np.concatenate([render(slice(s, min(s + step, n))) for s in range(0, n, step)])


# ---------------------------------------------------------------------------- shapes
SHAPES_PROPERTIES = {
    "count": count_property(60000),
    "min_shapes": {
        "type": "integer",
        "minimum": 0,
        "maximum": 32,
        "default": 1,
        "description": "Fewest shapes per image.",
    },
    "max_shapes": {
        "type": "integer",
        "minimum": 1,
        "maximum": 32,
        "default": 4,
        "description": "Most shapes per image.",
    },
    "seed": SEED_PROPERTY,
}

ELLIPSE, RECTANGLE, POLYGON = 0, 1, 2


def shape_params(rng: np.random.Generator, n: int, spec: TargetSpec, args: dict) -> dict:
    k, s = args["max_shapes"], spec.image_size
    return {
        **_background_params(rng, n, spec.channels),
        "n_shapes": rng.integers(args["min_shapes"], k + 1, n),
        "type": rng.integers(0, 3, (n, k)),
        "cx": rng.uniform(0, s, (n, k)),
        "cy": rng.uniform(0, s, (n, k)),
        "a": rng.uniform(0.06, 0.35, (n, k)) * s,
        "b": rng.uniform(0.06, 0.35, (n, k)) * s,
        "angle": rng.uniform(0, np.pi, (n, k)),
        "sides": rng.integers(3, 7, (n, k)),
        "filled": rng.random((n, k)) < 0.6,
        "thickness": rng.uniform(1.0, 1.0 + 0.08 * s, (n, k)),
        "colour": _colours(rng, (n, k), spec.channels),
    }


def _shape_distance(p: dict, rows: np.ndarray, slot: int, size: int) -> np.ndarray:
    """Signed distance (pixels, negative inside) of shape `slot` of images `rows`: (n, S, S)."""
    y, x = _grid(size)
    angle = _col(p["angle"][rows, slot])
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = x - _col(p["cx"][rows, slot]), y - _col(p["cy"][rows, slot])
    u, v = dx * cos + dy * sin, dy * cos - dx * sin  # (n, S, S) in the shape's frame
    a, b = _col(p["a"][rows, slot]), _col(p["b"][rows, slot])
    kind = p["type"][rows, slot]
    distance = np.empty_like(u)
    # Ellipse: radial distance scaled by the short axis (exact for circles).
    e = kind == ELLIPSE
    distance[e] = (np.hypot(u[e] / a[e], v[e] / b[e]) - 1.0) * np.minimum(a[e], b[e])
    # Rectangle with half-sides a, b: the exact box distance.
    r = kind == RECTANGLE
    qx, qy = np.abs(u[r]) - a[r], np.abs(v[r]) - b[r]
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    distance[r] = outside + np.minimum(np.maximum(qx, qy), 0)
    # Regular polygon of circumradius 1 in coordinates stretched by (a, b).
    g = kind == POLYGON
    pu, pv = u[g] / a[g], v[g] / b[g]
    sides = _col(p["sides"][rows, slot][g])
    wedge = 2 * np.pi / sides
    phi = np.mod(np.arctan2(pv, pu), wedge) - wedge / 2
    distance[g] = (np.hypot(pu, pv) * np.cos(phi) - np.cos(np.pi / sides)) * np.minimum(a[g], b[g])
    return distance


def render_shapes(p: dict, sl: slice, spec: TargetSpec) -> np.ndarray:
    images = _backgrounds(p, sl, spec.image_size)  # (n, C, S, S) float32
    n_shapes = p["n_shapes"][sl]
    for slot in range(p["type"].shape[1]):
        rows = np.flatnonzero(n_shapes > slot) + (sl.start or 0)
        if len(rows) == 0:
            break
        distance = _shape_distance(p, rows, slot, spec.image_size)
        outline = ~p["filled"][rows, slot]
        half = _col(p["thickness"][rows, slot]) / 2
        distance = np.where(_col(outline) > 0, np.abs(distance) - half, distance)
        local = rows - (sl.start or 0)
        sub = images[local]
        _blend(sub, _soft(distance), p["colour"][rows, slot])
        images[local] = sub
    return _to_uint8(images)


def load_shapes(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    if args["min_shapes"] > args["max_shapes"]:
        raise DfkdError(
            f"shapes: min_shapes ({args['min_shapes']}) exceeds max_shapes ({args['max_shapes']}); "
            "swap them or raise max_shapes."
        )

    def make(rng: np.random.Generator, n: int, keep: int) -> np.ndarray:
        p = shape_params(rng, n, spec, args)  # drawn for the whole chunk: prefix-stable
        return _render_batched(keep, spec.image_size, lambda sl: render_shapes(p, sl, spec))

    return SourceData(generate_in_chunks(args["count"], args["seed"], make), None)


# ---------------------------------------------------------------------------- strokes
STROKES_PROPERTIES = {
    "count": count_property(60000),
    "max_strokes": {
        "type": "integer",
        "minimum": 1,
        "maximum": 32,
        "default": 4,
        "description": "Most strokes in a stroke image.",
    },
    "seed": SEED_PROPERTY,
}

STROKES, STRIPES, CHECKER, BLOBS = 0, 1, 2, 3
_MAX_BLOBS = 8


def stroke_params(rng: np.random.Generator, n: int, spec: TargetSpec, args: dict) -> dict:
    k, s = args["max_strokes"], spec.image_size
    return {
        **_background_params(rng, n, spec.channels),
        "style": rng.integers(0, 4, n),
        # strokes: quadratic Bezier curves through 3 control points (collinear-ish = lines)
        "n_strokes": rng.integers(1, k + 1, n),
        "points": rng.uniform(-0.1, 1.1, (n, k, 3, 2)) * s,
        "straight": rng.random((n, k)) < 0.3,
        "width": rng.uniform(1.0, 1.0 + 0.12 * s, (n, k)),
        "stroke_colour": _colours(rng, (n, k), spec.channels),
        # stripes and checker: period (pixels), angle, phase, edge sharpness
        "period": rng.uniform(3.0, max(4.0, s / 2), n),
        "angle": rng.uniform(0, np.pi, n),
        "phase": rng.uniform(0, 2 * np.pi, (n, 2)),
        "sharpness": np.exp(rng.uniform(np.log(0.5), np.log(50.0), n)),
        # blobs: Gaussian bumps thresholded into metaballs
        "n_blobs": rng.integers(2, _MAX_BLOBS + 1, n),
        "blob_centre": rng.uniform(0, s, (n, _MAX_BLOBS, 2)),
        "blob_sigma": rng.uniform(0.05, 0.2, (n, _MAX_BLOBS)) * s,
        "blob_level": rng.uniform(0.3, 0.8, n),
    }


def _segment_distance(y, x, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance from pixel centres to segments p0-p1 ((n, 2) as x, y): (n, S, S)."""
    ax, ay = _col(p0[:, 0]), _col(p0[:, 1])
    bx, by = _col(p1[:, 0] - p0[:, 0]), _col(p1[:, 1] - p0[:, 1])
    t = ((x - ax) * bx + (y - ay) * by) / np.maximum(bx * bx + by * by, 1e-6)
    t = np.clip(t, 0, 1)
    return np.hypot(x - ax - t * bx, y - ay - t * by)


def _draw_strokes(p: dict, rows: np.ndarray, images: np.ndarray, size: int) -> None:
    y, x = _grid(size)
    t = np.linspace(0, 1, _BEZIER_POINTS, dtype=np.float32)[:, None]  # (M, 1)
    for slot in range(p["points"].shape[1]):
        active = p["n_strokes"][rows] > slot
        if not active.any():
            break
        r = rows[active]
        ctrl = p["points"][r, slot].copy()  # (n, 3, 2)
        straight = p["straight"][r, slot]
        ctrl[straight, 1] = (ctrl[straight, 0] + ctrl[straight, 2]) / 2
        curve = (
            ((1 - t) ** 2)[None] * ctrl[:, None, 0]
            + (2 * (1 - t) * t)[None] * ctrl[:, None, 1]
            + (t**2)[None] * ctrl[:, None, 2]
        )  # (n, M, 2)
        distance = np.full((len(r), size, size), np.inf, np.float32)
        for j in range(_BEZIER_POINTS - 1):
            np.minimum(
                distance, _segment_distance(y, x, curve[:, j], curve[:, j + 1]), out=distance
            )
        alpha = _soft(distance - _col(p["width"][r, slot]) / 2)
        sub = images[active]
        _blend(sub, alpha, p["stroke_colour"][r, slot])
        images[active] = sub


def _pattern_alpha(p: dict, rows: np.ndarray, style: int, size: int) -> np.ndarray:
    """Mixing weight (n, S, S) between the two background colours for stripes/checker/blobs."""
    y, x = _grid(size)
    if style == BLOBS:
        field = np.zeros((len(rows), size, size), np.float32)
        for j in range(_MAX_BLOBS):
            on = _col((p["n_blobs"][rows] > j).astype(np.float32))
            cx, cy = _col(p["blob_centre"][rows, j, 0]), _col(p["blob_centre"][rows, j, 1])
            sigma = _col(p["blob_sigma"][rows, j])
            field += on * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
        return np.clip((field - _col(p["blob_level"][rows])) * 8.0 + 0.5, 0, 1)
    angle = _col(p["angle"][rows])
    u = x * np.cos(angle) + y * np.sin(angle)
    freq = 2 * np.pi / _col(p["period"][rows])
    wave = np.sin(u * freq + _col(p["phase"][rows, 0]))
    if style == CHECKER:
        v = y * np.cos(angle) - x * np.sin(angle)
        wave = wave * np.sin(v * freq + _col(p["phase"][rows, 1]))
    return np.clip(0.5 + wave * _col(p["sharpness"][rows]), 0, 1)


def render_strokes(p: dict, sl: slice, spec: TargetSpec) -> np.ndarray:
    size = spec.image_size
    images = _backgrounds(p, sl, size)  # (n, C, S, S) float32
    start = sl.start or 0
    style = p["style"][sl]
    for kind in (STROKES, STRIPES, CHECKER, BLOBS):
        local = np.flatnonzero(style == kind)
        if len(local) == 0:
            continue
        rows = local + start
        sub = images[local]
        if kind == STROKES:
            _draw_strokes(p, rows, sub, size)
        else:
            c0, c1 = p["bg_from"][rows], p["bg_to"][rows]
            if kind == BLOBS:
                c1 = p["stroke_colour"][rows, 0]
            alpha = _pattern_alpha(p, rows, kind, size)
            sub = c0[:, :, None, None] + (c1 - c0)[:, :, None, None] * alpha[:, None]
        images[local] = sub
    return _to_uint8(images)


def load_strokes(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    def make(rng: np.random.Generator, n: int, keep: int) -> np.ndarray:
        p = stroke_params(rng, n, spec, args)  # drawn for the whole chunk: prefix-stable
        return _render_batched(keep, spec.image_size, lambda sl: render_strokes(p, sl, spec))

    return SourceData(generate_in_chunks(args["count"], args["seed"], make), None)


SHAPES = SourceKind(
    name="shapes",
    description="Procedural renders of random filled/outlined shapes on plain or gradient backgrounds.",
    properties=SHAPES_PROPERTIES,
    load=load_shapes,
    generator=True,
)

STROKES_KIND = SourceKind(
    name="strokes",
    description="Procedural strokes, lines, stripes, checkerboards and blobs.",
    properties=STROKES_PROPERTIES,
    load=load_strokes,
    generator=True,
)

KINDS = (SHAPES, STROKES_KIND)
