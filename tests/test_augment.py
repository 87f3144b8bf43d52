"""Batched augmentation: shapes, seeding, and what each option does."""
import pytest
import torch

from dfkd.augment import (
    VIEW_FLIP, VIEW_INVERT, apply_view, augment_active, augment_batch, augment_batch_with_views, augment_config,
    view_codes,
)
from dfkd.errors import DfkdError


ALL_ON = {"flip": True, "translate": 0.2, "scale": [0.8, 1.2], "rotate": 30, "invert": 0.5, "noise": 0.05}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def images(n=16, c=1, size=16):
    return torch.rand(n, c, size, size, generator=gen(123))


def test_shape_dtype_range():
    x = images(c=3)
    y = augment_batch(x, ALL_ON, gen(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1


def test_same_seed_same_batch_other_seed_differs():
    x = images()
    a, b, c = (augment_batch(x, ALL_ON, gen(s)) for s in (0, 0, 1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_all_off_is_identity():
    x = images()
    assert torch.equal(augment_batch(x, {}, gen(0)), x)
    assert not augment_active({}) and not augment_active({"flip": False, "scale": [1, 1]})
    assert augment_active({"noise": 0.1})


def test_flip_gives_original_or_mirror_both_occurring():
    x = images(n=64)
    y = augment_batch(x, {"flip": True}, gen(0))
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0 < int(mirrored.sum()) < 64


def test_translate_moves_content_within_bounds():
    size, n, t = 32, 64, 0.25
    x = torch.zeros(n, 1, size, size)
    x[:, :, 14:18, 14:18] = 1.0  # a centred square
    y = augment_batch(x, {"translate": t}, gen(0))
    coords = torch.arange(size, dtype=torch.float32)

    def centre(img):  # (n, 1, H, W) -> (n, 2) centre of mass (row, column)
        mass = img.sum((1, 2, 3))
        return torch.stack([(img.sum((1, 3)) * coords).sum(1) / mass, (img.sum((1, 2)) * coords).sum(1) / mass], 1)

    shift = centre(y) - centre(x)  # (n, 2)
    assert shift.abs().max() <= t * size + 1
    assert (shift.abs().max(1).values > 1).float().mean() > 0.5  # most images moved
    torch.testing.assert_close(y.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.02, atol=0.5)  # nothing cut off


def test_invert_and_noise():
    x = images(n=64)
    y = augment_batch(x, {"invert": 1.0}, gen(0))
    torch.testing.assert_close(y, 1 - x)
    z = augment_batch(x, {"noise": 0.1}, gen(0))
    assert 0.05 < float((z - x).std()) < 0.15


def test_unknown_option_refused():
    with pytest.raises(DfkdError, match="blur"):
        augment_config({"blur": 1})
    with pytest.raises(DfkdError, match="scale"):
        augment_config({"scale": [1.2, 0.8]})


def test_view_codes_only_for_flips_and_inversions():
    assert view_codes({"flip": True}) == [0, VIEW_FLIP]
    assert view_codes({"invert": 0.5}) == [0, VIEW_INVERT]
    assert view_codes({"flip": True, "invert": 0.3}) == [0, VIEW_FLIP, VIEW_INVERT, VIEW_FLIP | VIEW_INVERT]
    assert view_codes({"flip": True, "invert": 1.0}) == [VIEW_INVERT, VIEW_FLIP | VIEW_INVERT]  # always inverted
    for continuous in ({}, {"flip": True, "translate": 0.1}, {"noise": 0.01}, {"scale": [0.9, 1.0]}, {"rotate": 5}):
        assert view_codes(continuous) is None, continuous


@pytest.mark.parametrize("cfg", [{"flip": True}, {"invert": 0.5}, {"flip": True, "invert": 0.5}, ALL_ON])
def test_views_name_the_images_augment_batch_makes(cfg):
    x = images(n=64)
    y, code = augment_batch_with_views(x, cfg, gen(0))
    assert torch.equal(y, augment_batch(x, cfg, gen(0)))  # the same draws, the same images
    assert code.shape == (64,) and code.dtype == torch.int64
    if view_codes(cfg) is not None:  # exact: each image equals its view of the original
        assert set(code.tolist()) == set(view_codes(cfg))  # every view occurs in 64 draws
        for c in view_codes(cfg):
            rows = code == c
            assert torch.equal(y[rows], apply_view(x[rows], c))
