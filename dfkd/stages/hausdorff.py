"""Stage `hausdorff`: the exact Hausdorff distance between two sets of teacher features.

Inputs: `features/{source}.h5` files (`features` float `[N, D]`), optionally restricted to
the rows a manifest lists. Output: a JSON file with `hausdorff` = max(h(A,B), h(B,A)), both
directed distances `h(A,B) = max_a min_b ||a - b||`, the set sizes, and the pair of rows
attaining each directed distance.

Exact, and fast where early-break algorithms are slow
----------------------------------------------------
The answer equals a brute-force float64 computation (each reported distance is measured
directly in float64 on the rows as given: `sqrt(sum((a - b)^2))`, never by expansion).
The bulk of the work is float32 matrix products (torch, all cores), made safe by a
rigorous float32 error bound:

1. Both sets are centred on a common point (the mean of a sample; distances do not change,
   the norms that scale float32 error shrink) and projected on a common direction `v`
   (roughly the principal axis). B is sorted by projection and cut into column blocks.
2. For every row a, a running upper bound `ub` of its nearest-neighbour distance, from:
   - a probe: the rows of B nearest to a in projection (where a duplicate or near-
     duplicate of a lies, if it has one);
   - a dense product with a random sample of B;
   - full scans: per (group of rows, block of B), float32 `|a|^2 - 2ab + |b|^2`; the best
     candidate is re-measured in float64, and so is every other b whose float32 value the
     error bound cannot rule out. So after a scan, `ub` is the exact distance.
3. Pruning that never changes the answer:
   - early break (Taha & Hanbury 2015, blocked): `L` is the largest exact nearest-
     neighbour distance of a fully scanned row; a row with `ub <= L` cannot raise the
     maximum and leaves at once. The rows with the largest `ub` are scanned first (two
     rounds of TOP_ROWS), so that L is close to the answer early;
   - projection: `||a - b|| >= |v.a - v.b|`, so a block whose projection interval lies
     farther than `ub` from a row's projection cannot hold a closer b for that row; rows
     are grouped by projection and scan the nearest blocks first.
Subsets and near-duplicates (h = 0 or tiny one way: the slow case of early break, which
then scans everything) leave after the probe; unrelated sets leave after the sample, as
with early break. Degenerate inputs (many points closer together than the float32 error
bound) stay exact but re-measure many pairs in float64, so they are slower.

The search (steps 1, 2 and the scans of 3) is `dfkd.stages.neighbours`', shared with the quality
scores and the coverage radii; this module drives it with the early break and the files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from dfkd.io.artifacts import read_parquet, write_json
from dfkd.errors import DfkdError
from dfkd.stages.neighbours import (
    COLUMN_BLOCK, ROW_BLOCK, FeatureSet, Search, as_features, check_dims, prepare, torch_settings,
)
from dfkd.io.progress import progress
from dfkd.io.provenance import make_provenance
from dfkd.io.rows import gather_manifest, read_rows

TOP_ROWS = 32  # rows of A measured fully per round, to raise the early-break bound L
SAMPLE_COLUMNS = 128  # random rows of B that the rows left after the first L raise are measured against
WIDE_PROBE_WIDTH = 16  # the same, for the rows still left after the sample
FEATURE_DTYPES = ("f4", "f8")


def _directed(xs: FeatureSet, ys: FeatureSet, rng: np.random.Generator, block: int,
              desc: str | None = None) -> tuple[float, int, int]:
    search = Search(xs, ys, block)
    best = (-np.inf, -1, -1)  # (L: largest exact nearest-neighbour distance so far, row of X, row of Y)

    def finish(rows: np.ndarray, ub: np.ndarray, arg: np.ndarray, done: np.ndarray) -> None:
        nonlocal best
        if done.any():
            top = np.flatnonzero(done)[np.argmax(ub[done])]
            if ub[top] > best[0]:
                best = (float(ub[top]), int(rows[top]), int(search.order[arg[top]]))

    def measure_farthest(rows, ub, arg):
        """Measure fully the rows farthest from their probes (the likeliest to hold the
        maximum), raising L; return the other rows that L does not rule out."""
        top = np.zeros(len(rows), dtype=bool)
        top[np.argpartition(-ub, min(TOP_ROWS, len(rows) - 1))[:TOP_ROWS]] = True
        top_rows, top_ub, top_arg = rows[top], ub[top], arg[top]
        finish(top_rows, top_ub, top_arg, search.scan(top_rows, top_ub, top_arg, best[0]))
        keep = ~top & (ub > best[0])
        return rows[keep], ub[keep], arg[keep]

    # 1. Every row is compared with the rows of Y nearest in projection, where its
    #    duplicate or near-duplicate lies, if it has one: an upper bound per row.
    rows = np.arange(len(xs.x))
    ub, arg = search.probe(rows)
    # 2. The farthest rows set L; the probe's pairs re-measured exactly, a random sample of
    #    Y, then a second round let most of the others leave cheaply (any b within L will
    #    do, as in early break).
    rows, ub, arg = measure_farthest(rows, ub, arg)
    if len(rows):
        ub = search.remeasure(rows, arg)
        keep = ub > best[0]
        rows, ub, arg = rows[keep], ub[keep], arg[keep]
    if len(rows):
        cols = np.sort(rng.choice(len(search.order), min(len(search.order), SAMPLE_COLUMNS), replace=False))
        for measure in (lambda r: search.sample(r, cols), lambda r: search.probe(r, WIDE_PROBE_WIDTH, exact=True)):
            other_ub, other_arg = measure(rows)
            closer = other_ub < ub
            ub[closer], arg[closer] = other_ub[closer], other_arg[closer]
            keep = ub > best[0]
            rows, ub, arg = rows[keep], ub[keep], arg[keep]
    if len(rows):
        rows, ub, arg = measure_farthest(rows, ub, arg)
    # 3. The rest, grouped by projection block (groups in random order), scan the blocks.
    by_home = np.argsort(search.home(rows), kind="stable")
    rows, ub, arg = rows[by_home], ub[by_home], arg[by_home]
    bounds = np.searchsorted(search.home(rows), np.arange(len(search.starts) + 1))
    groups = [
        (start, min(start + ROW_BLOCK, e)) for s, e in zip(bounds[:-1], bounds[1:]) for start in range(s, e, ROW_BLOCK)
    ]
    order = rng.permutation(len(groups))
    for g in progress(order, desc, "row blocks") if desc else order:  # the long part: progress lines
        s, e = groups[g]
        group_rows, group_ub, group_arg = rows[s:e], ub[s:e].copy(), arg[s:e].copy()
        finish(group_rows, group_ub, group_arg, search.scan(group_rows, group_ub, group_arg, best[0]))
    return best


def directed_hausdorff_exact(
    a: np.ndarray,
    b: np.ndarray,
    block: int = COLUMN_BLOCK,
    *,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
) -> tuple[float, int, int]:
    """h(A, B) = max over rows a of A of min over rows b of B of ||a - b||, exactly.

    Returns `(h, i, j)` with `||a[i] - b[j]|| = h` (float64). `block` is the number of rows
    of B per matrix product; `seed` only changes the order of work, never the distance.
    `threads` sets torch's CPU threads meanwhile (most products are small: on a shared or
    busy machine, 1 thread is often fastest); None keeps torch's setting.
    """
    a, b = as_features(a, "A"), as_features(b, "B")
    check_dims(a, b)
    block = _check_block(block)
    with torch_settings(threads):
        xs, ys, rng = prepare(a, b, seed, device)
        return _directed(xs, ys, rng, block)


def hausdorff(
    a: np.ndarray,
    b: np.ndarray,
    block: int = COLUMN_BLOCK,
    *,
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    desc: str | None = None,
) -> dict:
    """Both directed distances and H = max of them, with the rows attaining each.

    `pair_ab = [i, j]`: row i of A, its nearest row j of B, ||a_i - b_j|| = directed_ab.
    `pair_ba = [j, i]`: row j of B, its nearest row i of A, ||b_j - a_i|| = directed_ba.
    Options as for `directed_hausdorff_exact`; `desc` names progress lines on stderr (None: quiet).
    """
    a, b = as_features(a, "A"), as_features(b, "B")
    check_dims(a, b)
    block = _check_block(block)
    with torch_settings(threads):
        xs, ys, rng = prepare(a, b, seed, device)
        ab = _directed(xs, ys, rng, block, f"{desc} A->B" if desc else None)
        ba = _directed(ys, xs, rng, block, f"{desc} B->A" if desc else None)
    return {
        "hausdorff": max(ab[0], ba[0]),
        "directed_ab": ab[0],
        "directed_ba": ba[0],
        "n_a": int(a.shape[0]),
        "n_b": int(b.shape[0]),
        "dim": int(a.shape[1]),
        "pair_ab": [ab[1], ab[2]],
        "pair_ba": [ba[1], ba[2]],
    }


def _check_block(block: int) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise DfkdError(f"hausdorff: block must be a positive integer, got {block!r}.")
    return int(block)


# ---------------------------------------------------------------------------- files
def _read_rows(path: Path, index: np.ndarray | None) -> np.ndarray:
    """Rows `index` (in that order; all rows if None) of `path:/features`."""
    return read_rows(path, "features", index, dtypes=FEATURE_DTYPES, ndim=2)


def gather_features(manifest, feature_files: Mapping[str, Path]) -> np.ndarray:
    """Features of a manifest's rows, in manifest order, from each row's source file
    (`features/{source}.h5`): `[len(manifest), D]`, float32 unless a file is float64."""
    return gather_manifest(manifest, feature_files, "features", dtypes=FEATURE_DTYPES, ndim=2)


def _selection(rows_path: Path | None) -> np.ndarray | None:
    if rows_path is None:
        return None
    manifest = read_parquet(rows_path, required_columns=["index"])
    if "source" in manifest.columns and manifest["source"].nunique() > 1:
        raise DfkdError(
            f"{rows_path} lists rows of several sources ({sorted(manifest['source'].unique())}); one "
            "features file cannot hold them. Gather the set's features first "
            "(dfkd.stages.hausdorff.gather_features, or `dfkd distance`)."
        )
    return manifest["index"].to_numpy(dtype=np.int64)


def hausdorff_files(
    a_h5: Path,
    b_h5: Path,
    out: Path,
    rows_a: Path | None = None,
    rows_b: Path | None = None,
    *,
    threads: int | None = None,
    device: str = "cpu",
) -> dict:
    """H between the features of two files (optionally only the rows two manifests list).

    Writes `out` (JSON, with provenance) and returns the same dict as `hausdorff`, except that
    `pair_ab` / `pair_ba` name rows of the features files (not positions in the selections).
    """
    index_a, index_b = _selection(rows_a), _selection(rows_b)
    a, b = _read_rows(Path(a_h5), index_a), _read_rows(Path(b_h5), index_b)
    for x, path, rows in ((a, a_h5, rows_a), (b, b_h5, rows_b)):
        if x.shape[0] == 0:
            where = f"the selection {rows} picks no rows of {path}" if rows is not None else f"{path} has no rows"
            raise DfkdError(f"{where}; the Hausdorff distance needs at least one feature vector per set.")
    if a.shape[1] != b.shape[1]:
        raise DfkdError(
            f"{a_h5} has {a.shape[1]}-dimensional features but {b_h5} has {b.shape[1]}; "
            "both must come from the same teacher layer. Re-run `dfkd features` with one teacher."
        )
    result = hausdorff(a, b, threads=threads, device=device, desc=f"hausdorff {Path(out).stem}")
    if index_a is not None:
        result["pair_ab"][0] = int(index_a[result["pair_ab"][0]])
        result["pair_ba"][1] = int(index_a[result["pair_ba"][1]])
    if index_b is not None:
        result["pair_ab"][1] = int(index_b[result["pair_ab"][1]])
        result["pair_ba"][0] = int(index_b[result["pair_ba"][0]])
    inputs = {"features_a": a_h5, "features_b": b_h5}
    if rows_a is not None:
        inputs["rows_a"] = rows_a
    if rows_b is not None:
        inputs["rows_b"] = rows_b
    config = {"metric": "euclidean", "dataset": "features", "block": COLUMN_BLOCK}
    write_json(out, result, make_provenance("hausdorff", config, inputs=inputs))
    return result
