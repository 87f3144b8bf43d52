"""The `imagefolder` source kind: class folders, flat folders, corrupt and empty folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfkd.errors import DfkdError
from dfkd.sources import TargetSpec, load_source, source_input_files

RGB16 = TargetSpec(channels=3, image_size=16)
GREY16 = TargetSpec(channels=1, image_size=16)


def save(path: Path, value: int, size=(16, 16), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (value, 255 - value, 0) if mode == "RGB" else value
    Image.new(mode, size, colour).save(path)


@pytest.fixture
def tiny_imagenet(tmp_path) -> Path:
    """TinyImageNet-like: train/{wnid}/images/*.JPEG plus a boxes file that is not an image."""
    root = tmp_path / "tiny"
    for label, wnid in enumerate(["n02", "n01", "n03"]):  # labels follow sorted wnids
        for i in range(3):
            save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 40 * label, size=(24, 24))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("boxes\n")
    return root


def test_class_folders_give_sorted_labels(tiny_imagenet):
    cfg = {"kind": "imagefolder", "root": str(tiny_imagenet / "train")}
    data = load_source(cfg, RGB16)
    assert data.images.shape == (9, 3, 16, 16) and data.images.dtype == np.uint8
    assert data.class_names == ["n01", "n02", "n03"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # n01 was written with value 40 (red 40), n02 with 0: labels follow folder names
    assert abs(int(data.images[0, 0].mean()) - 40) <= 3 and int(data.images[3, 0].mean()) <= 3
    assert len(source_input_files(cfg)) == 9


def test_target_split_picks_subfolder(tiny_imagenet):
    cfg = {"kind": "imagefolder", "root": str(tiny_imagenet)}
    assert len(load_source(cfg, GREY16, split="train").images) == 9
    with pytest.raises(DfkdError, match="does not exist"):
        load_source(cfg, GREY16, split="test")
    renamed = {**cfg, "splits": {"test": "train"}}
    assert len(load_source(renamed, GREY16, split="test").images) == 9


def test_flat_folder_has_no_labels_and_crops_to_square(tmp_path):
    save(tmp_path / "a.png", 10, size=(40, 20))
    save(tmp_path / "b.jpg", 200, size=(20, 20), mode="L")
    data = load_source({"kind": "imagefolder", "root": str(tmp_path)}, GREY16)
    assert data.labels is None and data.class_names is None
    assert data.images.shape == (2, 1, 16, 16)
    with pytest.raises(DfkdError, match="labels: none"):
        load_source({"kind": "imagefolder", "root": str(tmp_path), "labels": "folders"}, GREY16)
    stretched = load_source(
        {"kind": "imagefolder", "root": str(tmp_path), "fit": "stretch"}, GREY16
    )
    assert stretched.images.shape == (2, 1, 16, 16)


def test_labels_none_ignores_folders(tiny_imagenet):
    data = load_source(
        {"kind": "imagefolder", "root": str(tiny_imagenet), "labels": "none"}, GREY16
    )
    assert data.labels is None and len(data.images) == 9


def test_corrupt_image_skip_or_error(tmp_path, caplog):
    save(tmp_path / "cls" / "good.png", 100)
    (tmp_path / "cls" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cfg = {"kind": "imagefolder", "root": str(tmp_path)}
    with pytest.raises(DfkdError, match=r"bad.png cannot be decoded.*on_error: skip"):
        load_source(cfg, RGB16)
    with caplog.at_level(logging.WARNING):
        data = load_source({**cfg, "on_error": "skip"}, RGB16)
    assert data.skipped == 1 and len(data.images) == 1 and data.labels.tolist() == [0]
    assert "skipped 1 unreadable" in caplog.text


def test_count_subset_decodes_replacements_for_skipped(tmp_path):
    for i in range(10):
        save(tmp_path / f"{i:02d}.png", i * 20)
    (tmp_path / "05.png").write_bytes(b"garbage")
    cfg = {"kind": "imagefolder", "root": str(tmp_path), "on_error": "skip"}
    a = load_source({**cfg, "count": 9, "seed": 3}, GREY16)
    assert len(a.images) == 9
    b = load_source({**cfg, "count": 4, "seed": 3}, GREY16)
    c = load_source({**cfg, "count": 4, "seed": 4}, GREY16)
    np.testing.assert_array_equal(
        b.images, load_source({**cfg, "count": 4, "seed": 3}, GREY16).images
    )
    assert not np.array_equal(b.images, c.images)
    with pytest.raises(DfkdError, match="fewer than count: 10"):
        load_source({**cfg, "count": 10}, GREY16)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DfkdError, match="No images"):
        load_source({"kind": "imagefolder", "root": str(tmp_path / "empty")}, GREY16)
    with pytest.raises(DfkdError, match="does not exist"):
        load_source({"kind": "imagefolder", "root": str(tmp_path / "nope")}, GREY16)
    save(tmp_path / "classes" / "a" / "x.png", 1)
    (tmp_path / "classes" / "b").mkdir()
    with pytest.raises(DfkdError, match=r"\['b'\].*hold no images"):
        load_source({"kind": "imagefolder", "root": str(tmp_path / "classes")}, GREY16)


def test_rgba_and_palette_images(tmp_path):
    Image.new("RGBA", (16, 16), (255, 0, 0, 255)).save(tmp_path / "a.png")
    Image.new("P", (16, 16), 3).save(tmp_path / "b.gif")
    data = load_source({"kind": "imagefolder", "root": str(tmp_path)}, RGB16)
    assert data.images.shape == (2, 3, 16, 16)
    assert data.images[0, 0].min() == 255 and data.images[0, 1].max() == 0
