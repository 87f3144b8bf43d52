"""Generated sources (noise, shapes, strokes, patches) and scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dfkd.errors import DfkdError
from dfkd.sources import TargetSpec, load_source, source_input_files
from dfkd.sources.base import GENERATOR_CHUNK

GREY = TargetSpec(channels=1, image_size=16)
RGB = TargetSpec(channels=3, image_size=20)


@pytest.fixture
def photo(tmp_path):
    """A 300x200 smooth colour 'photo' so patch tests avoid decoding the bundled ones."""
    y, x = np.mgrid[0:200, 0:300]
    array = np.stack([x * 255 // 299, y * 255 // 199, (x + y) % 256], axis=-1).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(array).save(path)
    return path


def block(kind: str, tmp_photo=None, **extra) -> dict:
    cfg = {"kind": kind, "count": 40, **extra}
    if kind == "patches":
        cfg["photos"] = [str(tmp_photo)]
    return cfg


@pytest.mark.parametrize("kind", ["noise", "shapes", "strokes", "patches"])
@pytest.mark.parametrize("spec", [GREY, RGB], ids=["grey16", "rgb20"])
def test_generators_deterministic_per_seed(kind, spec, photo):
    cfg = block(kind, photo)
    a = load_source(cfg, spec)
    b = load_source(cfg, spec)
    c = load_source({**cfg, "seed": 1}, spec)
    assert a.images.shape == (40,) + (spec.channels, spec.image_size, spec.image_size)
    assert a.images.dtype == np.uint8 and a.images.flags.c_contiguous and a.labels is None
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.images.std() > 10  # not blank
    # images differ from each other
    assert len({im.tobytes() for im in a.images}) == 40


@pytest.mark.parametrize("kind", ["noise", "shapes", "strokes"])
def test_generators_are_prefix_stable(kind):
    small = load_source({"kind": kind, "count": 5}, GREY)
    large = load_source({"kind": kind, "count": GENERATOR_CHUNK + 3}, GREY)
    np.testing.assert_array_equal(small.images, large.images[:5])
    assert len(large.images) == GENERATOR_CHUNK + 3


def test_noise_distributions():
    uniform = load_source({"kind": "noise", "count": 64}, GREY).images
    assert uniform.min() == 0 and uniform.max() == 255 and abs(uniform.mean() - 127.5) < 3
    gauss = load_source(
        {"kind": "noise", "count": 64, "distribution": "gaussian", "mean": 0.2, "std": 0.05}, GREY
    ).images
    assert abs(gauss.mean() - 0.2 * 255) < 2 and abs(gauss.std() - 0.05 * 255) < 1
    smooth = load_source({"kind": "noise", "count": 64, "resolution": 4}, GREY).images.astype(int)
    rough = uniform.astype(int)
    assert np.abs(np.diff(smooth, axis=-1)).mean() < np.abs(np.diff(rough, axis=-1)).mean() / 3


def test_shapes_options():
    none = load_source({"kind": "shapes", "count": 8, "min_shapes": 0, "max_shapes": 1}, GREY)
    assert none.images.shape == (8, 1, 16, 16)
    with pytest.raises(DfkdError, match="min_shapes"):
        load_source({"kind": "shapes", "count": 8, "min_shapes": 5, "max_shapes": 2}, GREY)


def test_patches_options_and_inputs(photo):
    cfg = block("patches", photo, scale=[0.5, 0.5], flip=False)
    plain = load_source(cfg, RGB).images
    inverted = load_source({**cfg, "invert": 1.0}, RGB).images
    np.testing.assert_array_equal(inverted, 255 - plain)
    assert source_input_files(cfg) == [photo]
    folder = load_source({**cfg, "photos": [str(photo.parent)]}, RGB).images
    np.testing.assert_array_equal(folder, plain)
    with pytest.raises(DfkdError, match="does not exist"):
        load_source({**cfg, "photos": [str(photo.parent / "nope.png")]}, RGB)
    with pytest.raises(DfkdError, match="min > max"):
        load_source({**cfg, "scale": [0.5, 0.1]}, RGB)


def test_patches_crop_matches_the_photo(photo):
    """A crop of the whole short side at the photo's own scale reproduces the photo's pixels."""
    spec = TargetSpec(channels=3, image_size=200)
    crops = load_source(block("patches", photo, count=4, scale=[1.0, 1.0], flip=False), spec).images
    source = np.asarray(Image.open(photo)).transpose(2, 0, 1)  # (3, 200, 300)
    # a crop starts at some x0 in [0, 100]; find it from the red ramp and compare
    for crop in crops:
        x0 = int(
            np.argmin(
                [np.abs(source[0, :, s : s + 200].astype(int) - crop[0]).mean() for s in range(101)]
            )
        )
        assert np.abs(source[:, :, x0 : x0 + 200].astype(int) - crop).mean() < 2.0


def test_patches_bundled_photos():
    files = source_input_files({"kind": "patches"})
    names = {f.name for f in files}
    assert {"astronaut.png", "china.jpg", "flower.jpg"} <= names
    assert "color.png" not in names and "microaneurysms.png" not in names
    data = load_source({"kind": "patches", "count": 16}, GREY)
    assert data.images.shape == (16, 1, 16, 16) and data.images.std() > 5


def test_digits():
    data = load_source({"kind": "digits"}, TargetSpec(channels=1, image_size=8))
    assert data.images.shape == (1797, 1, 8, 8) and data.labels.dtype == np.int64
    assert data.images.max() == 255 and set(data.labels.tolist()) == set(range(10))
    sub = load_source({"kind": "digits", "count": 100, "seed": 2}, RGB)
    assert sub.images.shape == (100, 3, 20, 20) and len(sub.labels) == 100
    assert source_input_files({"kind": "digits"})[0].name == "digits.csv.gz"


def test_digits_jitter_makes_more_images_than_the_1797_digits():
    args = {"kind": "digits", "count": 5000, "seed": 3, "jitter": {"translate": 0.1, "rotate": 15, "scale": [0.7, 1.0]}}
    data = load_source(args, GREY)
    assert data.images.shape == (5000, 1, 16, 16) and data.images.dtype == np.uint8
    assert len(data.labels) == 5000 and set(data.labels.tolist()) == set(range(10))
    # jittered copies of the same digit differ; the same seed repeats exactly
    flat = data.images.reshape(5000, -1)
    assert len(np.unique(flat, axis=0)) > 4500
    assert np.array_equal(load_source(args, GREY).images, data.images)
    assert not np.array_equal(load_source({**args, "seed": 4}, GREY).images, data.images)


def test_digits_refuses_more_than_1797_without_jitter_and_bad_jitter_keys():
    with pytest.raises(DfkdError, match="count"):
        load_source({"kind": "digits", "count": 5000}, GREY)
    with pytest.raises(DfkdError, match="jitter.*unknown"):
        load_source({"kind": "digits", "count": 10, "jitter": {"shear": 3}}, GREY)
