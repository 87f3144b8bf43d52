"""Readers for the standard on-disk dataset formats, with numpy only (no network, no torchvision).

- IDX (MNIST, Fashion-MNIST), gzipped or not: header magic, dims, then raw bytes.
- CIFAR-10/100 "python version": pickled dicts, read with a restricted unpickler that only
  rebuilds numpy arrays and plain containers (a pickle can run any code otherwise).
- CIFAR-10 "binary version": records of 1 label byte + 3072 pixel bytes.
- SVHN cropped digits: MATLAB files `{train,test}_32x32.mat` (X: 32x32x3xN, y: 1..10, 10 = 0).

Every reader returns uint8 images (N, C, H, W) and int64 labels (N,) and raises DfkdError
naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from dfkd.errors import DfkdError

# ---------------------------------------------------------------------------- IDX
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path: Path) -> bytes:
    """Whole file content, gunzipped when the name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DfkdError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); it is truncated or not "
            "what its name says. Delete it and fetch it again."
        ) from exc


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array of `ndim` dimensions (3 for images, 1 for labels), as uint8."""
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DfkdError(
            f"{path} is not an IDX file (magic bytes {data[:4].hex() or 'missing'}; expected "
            f"0000 08 0{ndim}). It may be an HTML error page or a different format."
        )
    if data[2] != 0x08 or data[3] != ndim:
        raise DfkdError(
            f"{path}: IDX magic {data[:4].hex()} says type 0x{data[2]:02x} with {data[3]} "
            f"dimensions; expected unsigned bytes (0x08) with {ndim}."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DfkdError(f"{path}: IDX header is truncated ({len(data)} bytes).")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DfkdError(
            f"{path}: IDX header says shape {dims} ({expected} bytes) but the file holds "
            f"{len(data)} bytes; it is truncated or corrupt. Delete it and fetch it again."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, 3)  # (N, H, W)
    labels = read_idx(labels_path, 1).astype(np.int64)  # (N,)
    if len(images) != len(labels):
        raise DfkdError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; one of them is from a different split or truncated."
        )
    return np.ascontiguousarray(images[:, None]), labels  # (N, 1, H, W)


# ---------------------------------------------------------------------------- restricted pickle
def _numpy_core(name: str) -> str:
    major = int(np.__version__.split(".")[0])
    return f"numpy._core.{name}" if major >= 2 else f"numpy.core.{name}"


_SAFE_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {}
for _core in ("numpy.core", "numpy._core"):
    _SAFE_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = (
        _numpy_core("multiarray"),
        "_reconstruct",
    )
    _SAFE_GLOBALS[(f"{_core}.multiarray", "scalar")] = (_numpy_core("multiarray"), "scalar")
    _SAFE_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = (_numpy_core("numeric"), "_frombuffer")
for _name in ("ndarray", "dtype"):
    _SAFE_GLOBALS[("numpy", _name)] = ("numpy", _name)
_SAFE_GLOBALS[("_codecs", "encode")] = ("_codecs", "encode")  # bytes pickled with protocol 2
for _name in (
    "bytes",
    "bytearray",
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "str",
    "int",
    "float",
):
    _SAFE_GLOBALS[("builtins", _name)] = ("builtins", _name)
    _SAFE_GLOBALS[("__builtin__", _name)] = ("builtins", _name)  # Python 2 pickles
_SAFE_GLOBALS[("collections", "OrderedDict")] = ("collections", "OrderedDict")


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers only; any other global raises DfkdError."""

    def __init__(self, file, source: Path | str):
        super().__init__(file, encoding="latin1")  # CIFAR pickles come from Python 2
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        target = _SAFE_GLOBALS.get((module, name))
        if target is None:
            raise DfkdError(
                f"{self.source} asks to load '{module}.{name}', which is not allowed in a "
                "dataset pickle (only numpy arrays and plain containers are). The file is not "
                "a genuine CIFAR batch; delete it and fetch the dataset again."
            )
        return super().find_class(*target)


def load_restricted_pickle(path: Path) -> Any:
    data = read_bytes(path)
    try:
        return RestrictedUnpickler(io.BytesIO(data), path).load()
    except DfkdError:
        raise
    except Exception as exc:  # pickle raises many types for truncated data
        raise DfkdError(
            f"{path} is not a readable pickle ({type(exc).__name__}: {exc}); it is truncated "
            "or corrupt. Delete it and fetch the dataset again."
        ) from exc


def _str_keys(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DfkdError(f"{path} holds a {type(obj).__name__}; a CIFAR batch is a dict.")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_cifar_pickle(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch pickle: `data` (N, 3072) uint8 and `label_key` (N,) ints."""
    batch = _str_keys(load_restricted_pickle(path), path)
    for key in ("data", label_key):
        if key not in batch:
            raise DfkdError(
                f"{path} has no '{key}' entry (it has {sorted(batch)}); not a CIFAR batch."
            )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DfkdError(
            f"{path}: 'data' is {data.dtype} {data.shape}; expected uint8 (N, 3072) as in CIFAR."
        )
    if labels.shape != (len(data),):
        raise DfkdError(f"{path}: {len(data)} images but '{label_key}' has shape {labels.shape}.")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_meta(path: Path, key: str) -> list[str] | None:
    if not path.is_file():
        return None
    meta = _str_keys(load_restricted_pickle(path), path)
    names = meta.get(key)
    if names is None:
        return None
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


_CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar10_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of <1 label byte><3072 pixel bytes>."""
    data = read_bytes(path)
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise DfkdError(
            f"{path} holds {len(data)} bytes, not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 "
            "records; it is truncated or corrupt. Delete it and fetch it again."
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DfkdError(f"{path}: label byte {labels.max()} > 9; not a CIFAR-10 binary batch.")
    return np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32)), labels


# ---------------------------------------------------------------------------- SVHN
def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError on bad files
        raise DfkdError(
            f"{path} is not a readable MATLAB file ({type(exc).__name__}: {exc}); it is "
            "truncated or corrupt. Delete it and fetch it again."
        ) from exc
    if "X" not in mat or "y" not in mat:
        raise DfkdError(
            f"{path} lacks 'X' or 'y' (has {sorted(k for k in mat if not k.startswith('__'))})."
        )
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise DfkdError(
            f"{path}: X has shape {x.shape} for {len(y)} labels; expected (32, 32, 3, N)."
        )
    images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))).astype(np.uint8, copy=False)
    labels = y.astype(np.int64) % 10  # SVHN stores digit 0 as label 10
    return images, labels
