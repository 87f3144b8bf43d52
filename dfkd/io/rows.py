"""The one reader of a manifest's rows: dataset rows of each source's HDF5 file, in manifest order.

A transfer set's manifest (`transfer/{set}/seed{k}.parquet`) lists `(source, index)` per row.
Distillation reads the rows' images (`data/{source}.h5:/images`) and cached logits
(`features/{source}.h5:/logits`), distances and quality read their features and logits: all
through `gather_manifest`, which reads each source's rows with `read_rows`.

`read_rows` reads the wanted rows in sorted blocks of BLOCK rows (the writers' chunk length),
so a scattered selection costs one pass over the file, not one read per row; the rows come
back in the order asked for, repeats allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from dfkd.io.artifacts import h5_dataset, open_h5
from dfkd.errors import DfkdError

BLOCK = 4096  # rows read at a time (the HDF5 writers' chunk length)


def read_rows(path: str | Path, name: str, indices: np.ndarray | None = None, trailing: Sequence[int] | None = None,
              dtypes: Sequence[str] = (), ndim: int | None = None) -> np.ndarray:
    """Rows `indices` (any order, repeats allowed; None: every row) of dataset `name` of `path`,
    checked for its `trailing` shape (or only its rank `ndim`) and dtype."""
    with open_h5(path) as handle:
        dataset = h5_dataset(handle, name, ndim if trailing is None else 1 + len(trailing), dtypes)
        if trailing is not None and tuple(dataset.shape[1:]) != tuple(trailing):
            raise DfkdError(f"{path}:/{name} has shape {dataset.shape}; expected (N, {', '.join(map(str, trailing))}). "
                            "Re-run the rule that makes it for this target.")
        n = dataset.shape[0]
        if indices is None:
            return dataset[()]
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= n):
            bad = indices.min() if indices.min() < 0 else indices.max()
            raise DfkdError(f"{path}:/{name} has {n} rows but the manifest asks for row {bad}; the manifest and "
                            "the file do not match (one is stale): re-run the stale rule (assemble, or the file's).")
        out = np.empty((len(indices),) + dataset.shape[1:], dataset.dtype)
        order = np.argsort(indices, kind="stable")
        wanted = indices[order]  # sorted row numbers
        for start in range(0, n, BLOCK):
            lo, hi = np.searchsorted(wanted, [start, start + BLOCK])
            if lo < hi:
                block = dataset[start:min(start + BLOCK, n)]
                out[order[lo:hi]] = block[wanted[lo:hi] - start]
    return out


def manifest_sources(manifest) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(source per row, index per row as int64, the sources in order of first appearance)."""
    for column in ("source", "index"):
        if column not in manifest.columns:
            raise DfkdError(f"manifest lacks column '{column}' (it has {list(manifest.columns)}).")
    index = manifest["index"].to_numpy()
    if index.dtype.kind not in "iu":
        raise DfkdError(f"manifest column 'index' has dtype {index.dtype}; expected integers.")
    sources = manifest["source"].to_numpy()
    return sources, index.astype(np.int64), list(dict.fromkeys(sources.tolist()))


def gather_manifest(manifest, files: Mapping[str, str | Path], name: str, trailing: Sequence[int] | None = None,
                    dtypes: Sequence[str] = (), what: str = "features", ndim: int | None = None) -> np.ndarray:
    """Dataset `name` of a manifest's rows, in manifest order, each row from its source's file
    (`files`: source -> path, `what` names the kind of file in errors). Sources must agree on
    the trailing shape; the dtype is the widest of theirs."""
    sources, index, names = manifest_sources(manifest)
    missing = [source for source in names if source not in files]
    if missing:
        raise DfkdError(f"no {what} file given for source(s) {missing} of the manifest (given: {sorted(files)}). "
                        f"Pass one {what} file per source.")
    parts = {source: (rows, read_rows(files[source], name, index[rows], trailing, dtypes, ndim))
             for source in names for rows in [np.flatnonzero(sources == source)]}
    shapes = {source: block.shape[1:] for source, (_, block) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise DfkdError(f"{name} of the manifest's sources differ in dimension: {shapes}. Use one teacher and one target.")
    if not parts:
        return np.zeros((0, *(trailing or (0,))), dtype=np.float32)
    dtype = np.result_type(*[block.dtype for _, block in parts.values()])
    out = np.empty((len(manifest), *next(iter(shapes.values()))), dtype=dtype)
    for rows, block in parts.values():
        out[rows] = block
    return out
