"""Reading and writing artifacts: atomic, with provenance, with errors that name the file.

Formats: HDF5 for arrays, parquet for tables, JSON for metrics, torch files for model
weights and checkpoints (always loaded with `weights_only=True`). Every write goes to a
temporary file in the destination folder, is fsynced, then renamed into place, so a killed
job never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from dfkd.errors import DfkdError
from dfkd.provenance import PROVENANCE_KEY, provenance_json


# ---------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are shared like any file
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DfkdError(f"{what} not found: {path}. Build it first (snakemake makes it).")


# ---------------------------------------------------------------------------- JSON
def write_json(path: str | Path, payload: Mapping[str, Any], provenance: Mapping | None) -> None:
    body = dict(payload)
    if provenance is not None:
        body["provenance"] = dict(provenance)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    _require_file(path, "JSON file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DfkdError(f"{path} is not valid JSON ({exc}); delete it and re-run its rule.") from exc


# ---------------------------------------------------------------------------- HDF5
def write_h5(
    path: str | Path,
    arrays: Mapping[str, np.ndarray],
    provenance: Mapping | None,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write whole arrays to an HDF5 file (chunked, so that readers can stream it)."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            for name, array in arrays.items():
                array = np.ascontiguousarray(array)
                chunks = (min(len(array), 4096),) + array.shape[1:] if array.ndim and len(array) else None
                handle.create_dataset(name, data=array, chunks=chunks)
            if provenance is not None:
                handle.attrs[PROVENANCE_KEY] = provenance_json(provenance)
            for key, value in (attrs or {}).items():
                handle.attrs[key] = value


class H5Writer:
    """Stream rows into datasets of known final length, then rename the file into place.

    Used where the whole array would not fit in memory (features of 1M images).
    """

    def __init__(self, path: str | Path, provenance: Mapping | None):
        self.path = Path(path)
        self.provenance = provenance
        self._ctx = atomic_path(self.path)

    def __enter__(self):
        import h5py

        self._tmp = self._ctx.__enter__()
        self.handle = h5py.File(self._tmp, "w")
        return self

    def create(self, name: str, shape: tuple[int, ...], dtype) -> Any:
        chunks = (min(shape[0], 4096),) + tuple(shape[1:]) if shape and shape[0] else None
        return self.handle.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self.provenance is not None:
            self.handle.attrs[PROVENANCE_KEY] = provenance_json(self.provenance)
        self.handle.close()
        return self._ctx.__exit__(exc_type, exc, tb)


def open_h5(path: str | Path):
    """Open an HDF5 artifact for reading, turning a missing or corrupt file into a DfkdError."""
    import h5py

    path = Path(path)
    _require_file(path, "HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DfkdError(
            f"{path} is not a readable HDF5 file ({exc}); it may be truncated. "
            "Delete it and re-run the rule that makes it."
        ) from exc


def h5_dataset(handle, name: str, ndim: int | None = None, dtypes: Sequence[str] = ()):
    """Return dataset `name` of an open file after checking it exists, its rank and dtype."""
    if name not in handle:
        raise DfkdError(
            f"{handle.filename} has no dataset '{name}' (it has: {sorted(handle.keys())})."
        )
    dataset = handle[name]
    if ndim is not None and dataset.ndim != ndim:
        raise DfkdError(
            f"{handle.filename}:/{name} has shape {dataset.shape}; expected {ndim} dimensions."
        )
    if dtypes and dataset.dtype.kind + str(dataset.dtype.itemsize) not in dtypes and str(dataset.dtype) not in dtypes:
        raise DfkdError(
            f"{handle.filename}:/{name} has dtype {dataset.dtype}; expected one of {list(dtypes)}."
        )
    return dataset


def read_h5_array(
    path: str | Path, name: str, ndim: int | None = None, dtypes: Sequence[str] = ()
) -> np.ndarray:
    with open_h5(path) as handle:
        dataset = h5_dataset(handle, name, ndim, dtypes)
        try:
            return dataset[()]
        except OSError as exc:
            raise DfkdError(f"{path}:/{name} cannot be read ({exc}); the file is corrupt.") from exc


def read_h5_provenance(path: str | Path) -> dict[str, Any] | None:
    with open_h5(path) as handle:
        raw = handle.attrs.get(PROVENANCE_KEY)
    return json.loads(raw) if raw is not None else None


# ---------------------------------------------------------------------------- parquet
def write_parquet(path: str | Path, frame, provenance: Mapping | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    if provenance is not None:
        metadata[PROVENANCE_KEY.encode()] = provenance_json(provenance).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | Path, required_columns: Sequence[str] = ()):
    import pyarrow.parquet as pq

    path = Path(path)
    _require_file(path, "Parquet file")
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DfkdError(
            f"{path} is not a readable parquet file ({exc}). Delete it and re-run its rule."
        ) from exc
    missing = [column for column in required_columns if column not in frame.columns]
    if missing:
        raise DfkdError(f"{path} lacks columns {missing} (it has {list(frame.columns)}).")
    return frame


def read_parquet_provenance(path: str | Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(PROVENANCE_KEY.encode())
    return json.loads(raw) if raw is not None else None


# ---------------------------------------------------------------------------- torch files
def save_torch(path: str | Path, state: Mapping[str, Any]) -> None:
    """Save a dict of tensors and plain values (never arbitrary objects) atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load_torch(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or model file with `weights_only=True` (no pickled code runs)."""
    import torch

    path = Path(path)
    _require_file(path, "Checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DfkdError(
            f"{path} cannot be loaded as a dfkd checkpoint ({type(exc).__name__}: {exc}). "
            "It may be truncated or not written by dfkd; delete it and re-run its rule."
        ) from exc
    if not isinstance(state, dict):
        raise DfkdError(f"{path} holds a {type(state).__name__}, not a dfkd checkpoint dict.")
    return state
