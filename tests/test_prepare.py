"""The prepare stage: a source block in, results/{target}/data/{name}.h5 out."""

from __future__ import annotations

import gzip
import json
import struct

import h5py
import numpy as np
import pytest
from PIL import Image

from dfkd.stages import prepare
from dfkd.io.artifacts import read_h5_array, read_h5_provenance
from dfkd.errors import DfkdError
from dfkd.stages.prepare import prepare_source
from dfkd.io.provenance import file_sha256
from dfkd.sources import TargetSpec

SPEC = TargetSpec(channels=1, image_size=16)


def write_mnist(folder, n=6):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in [
        ("train-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
        ("train-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8)),
    ]:
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (folder / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes()))


def test_prepare_generator_writes_readable_h5(tmp_path):
    out = tmp_path / "results" / "fmnist" / "data" / "shapes.h5"
    cfg = {"kind": "shapes", "count": 12, "seed": 4}
    prepare_source("shapes", cfg, SPEC, None, out, config_slice={"source": cfg, "spec": [1, 16]})
    images = read_h5_array(out, "images", ndim=4, dtypes=["uint8"])
    assert images.shape == (12, 1, 16, 16)
    with h5py.File(out, "r") as handle:
        assert "labels" not in handle
        assert handle.attrs["source"] == "shapes" and handle.attrs["kind"] == "shapes"
        assert "class_names" not in handle.attrs
    provenance = read_h5_provenance(out)
    assert provenance["stage"] == "prepare" and provenance["seed"] == 4
    assert provenance["config"] == {"source": cfg, "spec": [1, 16]}
    assert provenance["inputs"] == {}
    assert list(tmp_path.rglob("*.tmp")) == []


def test_prepare_dataset_records_labels_and_raw_hashes(tmp_path):
    write_mnist(tmp_path / "data" / "MNIST" / "raw")
    cfg = {"kind": "torchvision", "name": "MNIST", "root": str(tmp_path / "data")}
    out = tmp_path / "train.h5"
    prepare_source("train", cfg, SPEC, "train", out, config_slice={"dataset": cfg})
    labels = read_h5_array(out, "labels", ndim=1, dtypes=["int64"])
    assert labels.shape == (6,)
    with h5py.File(out, "r") as handle:
        assert json.loads(handle.attrs["class_names"]) == [str(d) for d in range(10)]
        assert handle["images"].shape == (6, 1, 16, 16)
    inputs = read_h5_provenance(out)["inputs"]
    assert sorted(inputs) == ["raw/0", "raw/1"]
    assert inputs["raw/0"]["sha256"] == file_sha256(inputs["raw/0"]["path"])
    assert inputs["raw/0"]["path"].endswith("train-images-idx3-ubyte.gz")


def test_prepare_large_folder_records_listing_digest(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "MAX_HASHED_INPUTS", 3)
    for i in range(5):
        folder = tmp_path / "imgs" / ("a" if i < 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), i * 40).save(folder / f"{i}.png")
    cfg = {"kind": "imagefolder", "root": str(tmp_path / "imgs")}
    out = tmp_path / "folder.h5"
    prepare_source("folder", cfg, SPEC, None, out, config_slice=cfg)
    provenance = read_h5_provenance(out)
    assert provenance["inputs"] == {} and provenance["raw_listing"]["files"] == 5
    with h5py.File(out, "r") as handle:
        digest = handle.attrs["raw_listing_sha256"]
        assert handle["labels"][()].tolist() == [0, 0, 1, 1, 1]
    assert digest == provenance["raw_listing"]["sha256"]
    # renaming a file changes the digest
    (tmp_path / "imgs" / "b" / "4.png").rename(tmp_path / "imgs" / "b" / "9.png")
    prepare_source("folder", cfg, SPEC, None, out, config_slice=cfg)
    assert read_h5_provenance(out)["raw_listing"]["sha256"] != digest


def test_prepare_error_names_source_and_writes_nothing(tmp_path):
    out = tmp_path / "data" / "mnist.h5"
    cfg = {"kind": "torchvision", "name": "MNIST", "root": str(tmp_path / "nothing")}
    with pytest.raises(DfkdError, match="Source 'mnist': MNIST .* not found"):
        prepare_source("mnist", cfg, SPEC, None, out, config_slice=cfg)
    with pytest.raises(DfkdError, match="Source 'noise': .*unknown key"):
        prepare_source("noise", {"kind": "noise", "colour": 1}, SPEC, None, out, config_slice={})
    assert not out.exists()


def test_prepare_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "data" / "noise.h5"
    prepare_source("noise", {"kind": "noise", "count": 3}, SPEC, None, out, config_slice={})
    before = out.read_bytes()

    def broken_create(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken_create)
    with pytest.raises(OSError, match="disk full"):
        prepare_source("noise", {"kind": "noise", "count": 5}, SPEC, None, out, config_slice={})
    assert out.read_bytes() == before  # the old file is untouched
    assert [p.name for p in out.parent.iterdir()] == ["noise.h5"]  # no temporary left


def test_check_source_data_rejects_bad_arrays():
    from dfkd.sources import SourceData

    good = np.zeros((2, 1, 16, 16), np.uint8)
    prepare.check_source_data(SourceData(good, np.array([0, 1], np.int64)), SPEC, "x")
    with pytest.raises(DfkdError, match="expected uint8"):
        prepare.check_source_data(SourceData(good.astype(np.float32), None), SPEC, "x")
    with pytest.raises(DfkdError, match="expected uint8"):
        prepare.check_source_data(SourceData(np.zeros((2, 3, 16, 16), np.uint8), None), SPEC, "x")
    with pytest.raises(DfkdError, match="labels"):
        prepare.check_source_data(SourceData(good, np.array([0, 1, 2])), SPEC, "x")
    with pytest.raises(DfkdError, match="no images"):
        prepare.check_source_data(SourceData(good[:0], None), SPEC, "x")
