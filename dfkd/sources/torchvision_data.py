"""Source kind `torchvision`: MNIST, FashionMNIST, CIFAR10, CIFAR100, SVHN from disk.

Reads the layouts torchvision's downloaders leave (and the archives' own layouts) with numpy,
never touching the network unless the block says `download: true` and the files are missing.

Where it looks, for `root: R`:
- MNIST / FashionMNIST: IDX files (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
  `t10k-...`) in `R/`, `R/<Name>/raw/`, `R/<Name>/`; FashionMNIST also in Debian's
  `/usr/share/datasets/fashion-mnist/` (`apt-get install dataset-fashion-mnist`).
- CIFAR10: `R/cifar-10-batches-py/` (pickles) or `R/cifar-10-batches-bin/` (binary), or `R/`.
- CIFAR100: `R/cifar-100-python/{train,test}` (fine labels), or `R/`.
- SVHN: `R/{train,test}_32x32.mat`, or `R/SVHN/`, `R/svhn/`.

Split: a transfer source reads the block's `split`. When the source is a target's own dataset
the caller passes split="train"/"test" and that wins over the block's `split`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dfkd.errors import DfkdError
from dfkd.sources import formats
from dfkd.sources.base import (
    SEED_PROPERTY,
    SourceData,
    SourceKind,
    TargetSpec,
    count_property,
    subset_indices,
)
from dfkd.sources.convert import to_spec

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

CLASS_NAMES = {
    "MNIST": [str(d) for d in range(10)],
    "FashionMNIST": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "CIFAR10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],
    "SVHN": [str(d) for d in range(10)],
}

PROPERTIES = {
    "name": {
        "type": "string",
        "enum": ["MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN"],
        "description": "Which dataset.",
    },
    "root": {
        "type": "string",
        "default": "data",
        "description": "Folder holding the dataset in torchvision's layout (relative to the working directory).",
    },
    "split": {
        "type": "string",
        "enum": ["train", "test"],
        "default": "train",
        "description": "Split to read when used as a transfer source (a target's own data sets it itself).",
    },
    "download": {
        "type": "boolean",
        "default": False,
        "description": "Download with torchvision into root when the files are missing.",
    },
    "count": count_property(None),
    "seed": SEED_PROPERTY,
}


@dataclass(frozen=True)
class Found:
    files: list[Path]
    read: Callable[[], tuple[np.ndarray, np.ndarray, list[str] | None]]


# ---------------------------------------------------------------------------- locating files
def _idx_candidates(name: str, root: Path) -> list[Path]:
    folders = [root, root / name / "raw", root / name]
    if name == "FashionMNIST":
        folders.append(DEBIAN_FASHION_MNIST)
    return folders


def _find_idx(name: str, root: Path, split: str, searched: list[str]) -> Found | None:
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    for folder in _idx_candidates(name, root):
        searched.append(f"{folder}/{stems[0]}[.gz] + {stems[1]}[.gz]")
        paths = []
        for stem in stems:
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    paths.append(candidate)
                    break
        if len(paths) == 2:
            return Found(paths, lambda p=paths: (*formats.read_idx_pair(*p), CLASS_NAMES[name]))
    return None


def _find_cifar10(root: Path, split: str, searched: list[str]) -> Found | None:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for folder in (root / "cifar-10-batches-py", root):
        searched.append(f"{folder}/{{{','.join(names)}}} (python pickles)")
        paths = [folder / n for n in names]
        if all(p.is_file() for p in paths):
            meta = folder / "batches.meta"
            inputs = paths + ([meta] if meta.is_file() else [])

            def read(paths=paths, meta=meta):
                parts = [formats.read_cifar_pickle(p, "labels") for p in paths]
                classes = formats.read_cifar_meta(meta, "label_names") or CLASS_NAMES["CIFAR10"]
                return _concat(parts) + (classes,)

            return Found(inputs, read)
    for folder in (root / "cifar-10-batches-bin", root):
        searched.append(f"{folder}/{{{','.join(n + '.bin' for n in names)}}} (binary)")
        paths = [folder / f"{n}.bin" for n in names]
        if all(p.is_file() for p in paths):
            meta = folder / "batches.meta.txt"
            inputs = paths + ([meta] if meta.is_file() else [])

            def read(paths=paths, meta=meta):
                parts = [formats.read_cifar10_bin(p) for p in paths]
                classes = CLASS_NAMES["CIFAR10"]
                if meta.is_file():
                    classes = [
                        line.strip() for line in meta.read_text().splitlines() if line.strip()
                    ]
                return _concat(parts) + (classes,)

            return Found(inputs, read)
    return None


def _find_cifar100(root: Path, split: str, searched: list[str]) -> Found | None:
    for folder in (root / "cifar-100-python", root):
        path = folder / split
        searched.append(f"{path} (python pickle)")
        if path.is_file():
            meta = folder / "meta"
            inputs = [path] + ([meta] if meta.is_file() else [])

            def read(path=path, meta=meta):
                images, labels = formats.read_cifar_pickle(path, "fine_labels")
                return images, labels, formats.read_cifar_meta(meta, "fine_label_names")

            return Found(inputs, read)
    return None


def _find_svhn(root: Path, split: str, searched: list[str]) -> Found | None:
    for folder in (root, root / "SVHN", root / "svhn"):
        path = folder / f"{split}_32x32.mat"
        searched.append(str(path))
        if path.is_file():
            return Found(
                [path], lambda path=path: (*formats.read_svhn_mat(path), CLASS_NAMES["SVHN"])
            )
    return None


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def find_dataset(name: str, root: Path, split: str, searched: list[str]) -> Found | None:
    if name in ("MNIST", "FashionMNIST"):
        return _find_idx(name, root, split, searched)
    if name == "CIFAR10":
        return _find_cifar10(root, split, searched)
    if name == "CIFAR100":
        return _find_cifar100(root, split, searched)
    if name == "SVHN":
        return _find_svhn(root, split, searched)
    raise DfkdError(
        f"Unknown torchvision dataset {name!r}; use one of {PROPERTIES['name']['enum']}."
    )


def _how_to_get(name: str, root: Path) -> str:
    fixes = ["set `download: true` in the source block (torchvision fetches it into root)"]
    if name == "FashionMNIST":
        fixes.insert(
            0, f"`apt-get install dataset-fashion-mnist` (installs {DEBIAN_FASHION_MNIST})"
        )
    layouts = {
        "MNIST": f"put the four IDX files (gzipped or not) in {root}/MNIST/raw/",
        "FashionMNIST": f"put the four IDX files (gzipped or not) in {root}/FashionMNIST/raw/",
        "CIFAR10": f"unpack cifar-10-python.tar.gz into {root} (giving {root}/cifar-10-batches-py/)",
        "CIFAR100": f"unpack cifar-100-python.tar.gz into {root} (giving {root}/cifar-100-python/)",
        "SVHN": f"put train_32x32.mat and test_32x32.mat in {root}/",
    }
    fixes.append(layouts[name])
    return "; or ".join(fixes)


def _download(name: str, root: Path, split: str) -> None:
    import torchvision.datasets as tvd

    log.info("downloading %s (%s) into %s", name, split, root)
    try:
        if name == "SVHN":
            tvd.SVHN(str(root), split=split, download=True)
        else:
            getattr(tvd, name)(str(root), train=split == "train", download=True)
    except Exception as exc:  # network errors come in many types
        raise DfkdError(
            f"Downloading {name} into {root} failed ({type(exc).__name__}: {exc}). "
            f"Without network: {_how_to_get(name, root)}."
        ) from exc


# ---------------------------------------------------------------------------- kind functions
def _effective_split(args: dict, split: str | None) -> str:
    return split if split is not None else args["split"]


def input_files(args: dict, split: str | None) -> list[Path]:
    """The raw files this block reads (empty when they are not there yet)."""
    found = find_dataset(args["name"], Path(args["root"]), _effective_split(args, split), [])
    return found.files if found else []


def load(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    name, root, split = args["name"], Path(args["root"]), _effective_split(args, split)
    searched: list[str] = []
    found = find_dataset(name, root, split, searched)
    if found is None and args["download"]:
        _download(name, root, split)
        found = find_dataset(name, root, split, [])
    if found is None:
        raise DfkdError(
            f"{name} ({split} split) not found. Looked in:\n  "
            + "\n  ".join(searched)
            + f"\nTo get it: {_how_to_get(name, root)}."
        )
    images, labels, class_names = found.read()  # (N, C, H, W) uint8, (N,) int64
    keep = subset_indices(len(images), args["count"], args["seed"], f"{name} ({split})")
    if keep is not None:
        images, labels = images[keep], labels[keep]
    return SourceData(to_spec(images, spec), np.ascontiguousarray(labels, np.int64), class_names)


KIND = SourceKind(
    name="torchvision",
    description="A standard dataset (MNIST, FashionMNIST, CIFAR10, CIFAR100, SVHN) read from disk.",
    properties=PROPERTIES,
    required=("name",),
    load=load,
    input_files=input_files,
)
