"""The `torchvision` source kind: standard on-disk layouts written small in tmp_path."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from dfkd.errors import DfkdError
from dfkd.sources import TargetSpec, load_source, source_input_files
from dfkd.sources import formats
from dfkd.sources.torchvision_data import DEBIAN_FASHION_MNIST

GREY28 = TargetSpec(channels=1, image_size=28)
RGB32 = TargetSpec(channels=3, image_size=32)


# ---------------------------------------------------------------------------- writers
def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist(folder: Path, prefix: str, n: int, gz: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return images, labels


def cifar_batch(n: int, seed: int, label_key: str = "labels", classes: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": f"batch {seed}",
        label_key: [int(v) for v in rng.integers(0, classes, n)],
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def write_pickle(path: Path, obj, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=protocol)


# ---------------------------------------------------------------------------- MNIST / IDX
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["root", "torchvision"])
def test_mnist_idx_layouts(tmp_path, gz, layout):
    folder = tmp_path if layout == "root" else tmp_path / "MNIST" / "raw"
    train_images, train_labels = write_mnist(folder, "train", 12, gz, seed=1)
    test_images, test_labels = write_mnist(folder, "t10k", 5, gz, seed=2)
    cfg = {"kind": "torchvision", "name": "MNIST", "root": str(tmp_path)}

    data = load_source(cfg, GREY28)
    assert data.images.shape == (12, 1, 28, 28) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images[:, 0], train_images)
    np.testing.assert_array_equal(data.labels, train_labels)
    assert data.labels.dtype == np.int64
    assert data.class_names == [str(d) for d in range(10)]

    test = load_source({**cfg, "split": "test"}, GREY28)
    np.testing.assert_array_equal(test.images[:, 0], test_images)
    # The caller's split (a target's own data) wins over the block's.
    assert len(load_source({**cfg, "split": "test"}, GREY28, split="train").images) == 12
    assert len(source_input_files(cfg)) == 2


def test_fashion_mnist_converted_to_rgb32(tmp_path):
    images, labels = write_mnist(tmp_path / "FashionMNIST" / "raw", "train", 8, gz=True)
    cfg = {"kind": "torchvision", "name": "FashionMNIST", "root": str(tmp_path)}
    data = load_source(cfg, RGB32)
    assert data.images.shape == (8, 3, 32, 32) and data.images.flags.c_contiguous
    assert np.array_equal(data.images[:, 0], data.images[:, 2])
    assert data.class_names[0] == "T-shirt/top"


def test_count_subset_is_seeded(tmp_path):
    write_mnist(tmp_path, "train", 50, gz=False)
    cfg = {"kind": "torchvision", "name": "MNIST", "root": str(tmp_path), "count": 10}
    a, b = load_source(cfg, GREY28), load_source(cfg, GREY28)
    c = load_source({**cfg, "seed": 1}, GREY28)
    assert len(a.images) == 10
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    with pytest.raises(DfkdError, match="count: 51"):
        load_source({**cfg, "count": 51}, GREY28)


def test_idx_bad_magic_and_truncation(tmp_path):
    write_mnist(tmp_path, "train", 4, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    cfg = {"kind": "torchvision", "name": "MNIST", "root": str(tmp_path)}
    with pytest.raises(DfkdError, match=r"train-images-idx3-ubyte.*truncated"):
        load_source(cfg, GREY28)
    path.write_bytes(b"<html>" + raw[6:])
    with pytest.raises(DfkdError, match="not an IDX file"):
        load_source(cfg, GREY28)


def test_truncated_gzip_names_file(tmp_path):
    write_mnist(tmp_path, "train", 4, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DfkdError, match="train-labels-idx1-ubyte.gz"):
        load_source({"kind": "torchvision", "name": "MNIST", "root": str(tmp_path)}, GREY28)


def test_label_count_mismatch(tmp_path):
    write_mnist(tmp_path, "train", 4, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8), gz=False)
    with pytest.raises(DfkdError, match="4 images but .* 3 labels"):
        load_source({"kind": "torchvision", "name": "MNIST", "root": str(tmp_path)}, GREY28)


def test_missing_dataset_lists_paths_and_fixes(tmp_path):
    with pytest.raises(DfkdError) as info:
        load_source({"kind": "torchvision", "name": "MNIST", "root": str(tmp_path)}, GREY28)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "download: true" in message
    assert source_input_files({"kind": "torchvision", "name": "MNIST", "root": str(tmp_path)}) == []
    with pytest.raises(DfkdError, match="cifar-10-batches-py"):
        load_source({"kind": "torchvision", "name": "CIFAR10", "root": str(tmp_path)}, RGB32)


def test_missing_fashion_mnist_suggests_debian_package(tmp_path, monkeypatch):
    from dfkd.sources import torchvision_data

    monkeypatch.setattr(torchvision_data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DfkdError, match="apt-get install dataset-fashion-mnist"):
        load_source({"kind": "torchvision", "name": "FashionMNIST", "root": str(tmp_path)}, GREY28)


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_from_debian(tmp_path):
    cfg = {"kind": "torchvision", "name": "FashionMNIST", "root": str(tmp_path / "empty")}
    test = load_source(cfg, GREY28, split="test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    train = load_source(cfg, GREY28, split="train")
    assert train.images.shape == (60000, 1, 28, 28) and train.labels.shape == (60000,)
    assert [p.parent for p in source_input_files(cfg)] == [DEBIAN_FASHION_MNIST] * 2


# ---------------------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_pickles(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    batches = [cifar_batch(3, seed=i) for i in range(1, 6)]
    for i, batch in enumerate(batches, start=1):
        write_pickle(folder / f"data_batch_{i}", batch, protocol)
    write_pickle(folder / "test_batch", cifar_batch(4, seed=9), protocol)
    write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]}, protocol)
    cfg = {"kind": "torchvision", "name": "CIFAR10", "root": str(tmp_path)}

    data = load_source(cfg, RGB32)
    assert data.images.shape == (15, 3, 32, 32) and data.labels.dtype == np.int64
    expected = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(data.images, expected)
    np.testing.assert_array_equal(data.labels, sum((b["labels"] for b in batches), []))
    assert data.class_names == [f"c{i}" for i in range(10)]
    assert len(load_source(cfg, RGB32, split="test").images) == 4
    assert len(source_input_files(cfg)) == 6  # five batches + meta

    grey = load_source(cfg, TargetSpec(1, 16))
    assert grey.images.shape == (15, 1, 16, 16)


def test_cifar10_binary(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    records = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, 2, dtype=np.uint8)
        pixels = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        (folder / f"{name}.bin").write_bytes(np.concatenate([labels[:, None], pixels], 1).tobytes())
        records[name] = (labels, pixels)
    cfg = {"kind": "torchvision", "name": "CIFAR10", "root": str(tmp_path), "split": "test"}
    data = load_source(cfg, RGB32)
    np.testing.assert_array_equal(data.labels, records["test_batch"][0])
    np.testing.assert_array_equal(data.images.reshape(2, -1), records["test_batch"][1])
    assert data.class_names[0] == "airplane"
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(DfkdError, match=r"test_batch.bin .*3073-byte"):
        load_source(cfg, RGB32)


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    train = cifar_batch(6, seed=3, label_key="fine_labels", classes=100)
    train["coarse_labels"] = [0] * 6
    write_pickle(folder / "train", train)
    write_pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    data = load_source({"kind": "torchvision", "name": "CIFAR100", "root": str(tmp_path)}, RGB32)
    np.testing.assert_array_equal(data.labels, train["fine_labels"])
    assert len(data.class_names) == 100


def test_cifar_pickle_with_bytes_keys(tmp_path):
    batch = {k.encode(): v for k, v in cifar_batch(2, seed=1).items()}
    path = tmp_path / "batch"
    write_pickle(path, batch)
    images, labels = formats.read_cifar_pickle(path, "labels")
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == batch[b"labels"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_pickle(path, {"data": _Evil(), "labels": [0]})
    with pytest.raises(DfkdError, match=r"(posix|os|nt)\.system.*not allowed"):
        load_source(
            {"kind": "torchvision", "name": "CIFAR10", "root": str(tmp_path), "split": "test"},
            RGB32,
        )
    payload = pickle.dumps({"x": pytest.fail}, protocol=2)
    with pytest.raises(DfkdError, match="not allowed"):
        formats.RestrictedUnpickler(io.BytesIO(payload), "mem").load()


def test_truncated_cifar_pickle(tmp_path):
    path = tmp_path / "cifar-100-python" / "test"
    write_pickle(path, cifar_batch(2, 1, "fine_labels", 100))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DfkdError, match=r"cifar-100-python/test is not a readable pickle"):
        load_source(
            {"kind": "torchvision", "name": "CIFAR100", "root": str(tmp_path), "split": "test"},
            RGB32,
        )


# ---------------------------------------------------------------------------- SVHN
def test_svhn_mat(tmp_path):
    import scipy.io

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    data = load_source(
        {"kind": "torchvision", "name": "SVHN", "root": str(tmp_path)}, RGB32, split="test"
    )
    assert data.labels.tolist() == [0, 1, 2, 0, 9]
    np.testing.assert_array_equal(
        data.images[2, 1], x[:, :, 1, 2]
    )  # (N, C, H, W) from (H, W, C, N)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(DfkdError, match="test_32x32.mat is not a readable MATLAB file"):
        load_source(
            {"kind": "torchvision", "name": "SVHN", "root": str(tmp_path)}, RGB32, split="test"
        )
