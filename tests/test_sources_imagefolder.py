"""The `imagefolder` source kind: class folders, flat folders, corrupt and empty folders."""

from __future__ import annotations

import logging
import os
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


# ---------------------------------------------------------------------------- photo folders (issue 18)
PEAK_CHILD = """
import json, re, sys
from dfkd.sources import TargetSpec, load_source

def status(key):
    return int(re.search(key + r':\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) << 10

cfg = {"kind": "imagefolder", "root": sys.argv[1], "labels": "none"}
load_source({**cfg, "root": sys.argv[2]}, TargetSpec(3, 32))  # warm up: torch, PIL plugins
try:  # reset the peak to the current RSS (Linux >= 4.0); else the warm-up's small peak stays
    open('/proc/self/clear_refs', 'w').write('5')
except OSError:
    pass
before = status('VmRSS')
data = load_source(cfg, TargetSpec(3, 32))
print(json.dumps({"n": len(data.images), "peak_over_start": status('VmHWM') - before}))
"""


def test_photo_folder_peak_memory_is_a_few_photos_not_the_folder(tmp_path):
    """12 photos of 6 MP (18 MB each decoded): the pre-fix loader held all of them (> 300 MB)."""
    import json
    import shutil
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status (Linux) to read the peak resident memory")
    height, width = 2000, 3000
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / 97.0
    photo = np.stack([128 + 90 * np.sin(x), 128 + 90 * np.cos(y), 128 + 60 * np.sin(x + y)], -1)
    photo = Image.fromarray(photo.astype(np.uint8))
    (tmp_path / "photos").mkdir()
    photo.save(tmp_path / "photos" / "00.png", compress_level=1)
    photo.save(tmp_path / "photos" / "01.jpg", quality=85)
    for i in range(2, 12):  # copies, not links: each is decoded on its own
        shutil.copy(
            tmp_path / "photos" / f"{i % 2:02d}.{'png' if i % 2 == 0 else 'jpg'}",
            tmp_path / "photos" / f"{i:02d}.{'png' if i % 2 == 0 else 'jpg'}",
        )
    save(tmp_path / "warm" / "a.png", 10, size=(64, 48))
    done = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, str(tmp_path / "photos"), str(tmp_path / "warm")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    photo_bytes = height * width * 3
    assert result["n"] == 12
    # one decoded photo, its square crop, the decoder's buffers, the small images: < 4 photos
    # (measured: 2.3 photos; before the fix all 12 were held at once)
    assert result["peak_over_start"] < 4 * photo_bytes, (result, photo_bytes)


def test_large_photos_match_a_full_size_resize(tmp_path):
    """JPEG draft decoding and PIL's resize of large photos stay within 2 grey levels (0.5 on
    average) of a full-size decode resized by `to_spec`."""
    from dfkd.sources.convert import to_spec

    y, x = np.mgrid[0:600, 0:800].astype(np.float32) / 97.0
    photo = np.stack([128 + 90 * np.sin(x), 128 + 90 * np.cos(y), 128 + 60 * np.sin(x + y)], -1)
    photo = photo.astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "a.png")
    Image.fromarray(photo).save(tmp_path / "b.jpg", quality=95)
    for fit in ("crop", "stretch"):
        data = load_source({"kind": "imagefolder", "root": str(tmp_path), "fit": fit}, RGB16)
        for image, path in zip(data.images, ("a.png", "b.jpg")):
            full = np.asarray(Image.open(tmp_path / path).convert("RGB")).transpose(2, 0, 1)
            reference = to_spec(full[None].copy(), RGB16, crop=fit == "crop")[0]
            error = np.abs(image.astype(int) - reference)
            assert error.max() <= 2 and error.mean() < 0.5, (fit, path, error.max(), error.mean())


def test_symlink_loops_and_duplicates_are_read_once(tmp_path, caplog):
    root = tmp_path / "d"
    save(root / "cat" / "x.png", 10, mode="L")
    save(root / "dog" / "y.png", 200, mode="L")
    (root / "dog" / "loop").symlink_to("..")  # d/dog/loop -> d: a loop
    (root / "cat" / "again.png").symlink_to("../dog/y.png")  # the same file under another class
    outside = tmp_path / "shared"
    save(outside / "z.png", 90, mode="L")
    (root / "cat" / "shared").symlink_to(outside)  # a folder outside root: read once
    (root / "dog" / "shared2").symlink_to(outside)  # ... not twice
    cfg = {"kind": "imagefolder", "root": str(root)}
    with caplog.at_level(logging.WARNING):
        data = load_source(cfg, GREY16)
    assert data.class_names == ["cat", "dog"]
    # x.png, shared/z.png (under cat, the first route) and y.png under its own folder dog
    assert data.labels.tolist() == [0, 0, 1]
    assert sorted(int(v) for v in data.images[:, 0, 0, 0]) == [10, 90, 200]
    assert data.skipped == 3  # the loop, the second link to shared, the linked file
    assert "2 link(s) to folders already read" in caplog.text
    assert "1 file(s) reached by a second path" in caplog.text and "again.png" in caplog.text
    files = source_input_files(cfg)
    assert [f.relative_to(root).as_posix() for f in files] == [
        "cat/shared/z.png",
        "cat/x.png",
        "dog/y.png",
    ]


def test_symlink_skips_are_recorded_in_the_prepared_file(tmp_path):
    from dfkd.io.artifacts import open_h5
    from dfkd.stages.prepare import prepare_source

    root = tmp_path / "d"
    save(root / "a.png", 10)
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("../..")  # above root: root itself is not read again
    out = tmp_path / "out.h5"
    cfg = {"kind": "imagefolder", "root": str(root), "labels": "none"}
    prepare_source("photos", cfg, GREY16, None, out, {"sources": {"photos": cfg}})
    with open_h5(out) as handle:
        assert handle["images"].shape == (1, 1, 16, 16)
        assert int(handle.attrs["skipped"]) == 1


def write_grey16(path: Path, values: np.ndarray, mode: str) -> None:
    """Save a 2-D array of 16-bit values as a grey image of PIL mode I;16, I;16B or I."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I":
        Image.fromarray(values.astype(np.int32), "I").save(path)
    elif mode == "I;16B":
        Image.fromarray(values.astype(">u2")).save(path)
    else:
        Image.fromarray(values.astype(np.uint16)).save(path)
    assert Image.open(path).mode == mode, (path, Image.open(path).mode)


@pytest.mark.parametrize(
    "name, mode",
    [
        ("a.png", "I;16"),
        ("b.tif", "I;16"),
        ("c.tif", "I;16B"),
        ("d.tif", "I"),
    ],
)
def test_16_bit_images_are_scaled_by_their_depth(tmp_path, name, mode):
    eight = np.arange(256).reshape(16, 16)  # every 8-bit level once
    write_grey16(tmp_path / name, eight * 257, mode)  # the same levels at 16 bits
    for spec in (GREY16, RGB16):
        data = load_source({"kind": "imagefolder", "root": str(tmp_path)}, spec)
        for channel in data.images[0]:
            np.testing.assert_array_equal(channel, eight)


def test_16_bit_values_round_to_nearest_and_8_bit_mode_i_stays(tmp_path):
    write_grey16(tmp_path / "a" / "x.png", np.full((16, 16), 1000), "I;16")  # 1000/257 = 3.89
    write_grey16(tmp_path / "b" / "y.tif", np.full((16, 16), 200), "I")  # 8-bit values in mode I
    data = load_source({"kind": "imagefolder", "root": str(tmp_path)}, GREY16)
    assert data.images[0].min() == data.images[0].max() == 4
    assert data.images[1].min() == data.images[1].max() == 200


def test_class_folders_that_are_links_still_read(tmp_path):
    """A common layout: class folders linked from a shared store. Nothing is skipped."""
    for name, value in (("cat", 10), ("dog", 200)):
        save(tmp_path / "store" / name / "x.png", value, mode="L")
        (tmp_path / "root").mkdir(exist_ok=True)
        (tmp_path / "root" / name).symlink_to(tmp_path / "store" / name)
    data = load_source({"kind": "imagefolder", "root": str(tmp_path / "root")}, GREY16)
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 1]
    assert data.images[:, 0, 0, 0].tolist() == [10, 200] and data.skipped == 0
