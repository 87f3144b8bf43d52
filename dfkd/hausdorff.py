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
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from dfkd.artifacts import h5_dataset, open_h5, read_parquet, write_json
from dfkd.errors import DfkdError
from dfkd.progress import progress
from dfkd.provenance import make_provenance

U32 = 2.0**-24  # unit roundoff of float32
U64 = 2.0**-53  # unit roundoff of float64
COLUMN_BLOCK = 4096  # rows of B per matrix product
ROW_BLOCK = 4096  # rows of A per matrix product, at most
TOP_ROWS = 32  # rows of A measured fully per round, to raise the early-break bound L
PROBE_WIDTH = 2  # rows of B nearest in projection that every row of A is first measured against
SAMPLE_COLUMNS = 128  # random rows of B that the rows left after the first L raise are measured against
WIDE_PROBE_WIDTH = 16  # the same, for the rows still left after the sample
PROBE_CHUNK = 1 << 20  # values of B gathered per probe batch
READ_CHUNK = 1 << 16  # rows per HDF5 read


# ---------------------------------------------------------------------------- preparation
def _as_features(x, name: str) -> np.ndarray:
    """The rows as given when float32/float64 (never copied), else converted to float64."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise DfkdError(f"feature set {name} must be a 2-D array [N, D], got shape {x.shape}.")
    if x.shape[0] == 0:
        raise DfkdError(f"feature set {name} is empty; the Hausdorff distance needs at least one row.")
    if x.shape[1] == 0:
        raise DfkdError(f"feature set {name} has 0 feature dimensions.")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return x


class _Set:
    """One feature set, ready for the search.

    `x` holds the rows as given: every reported distance is measured on them in float64.
    `x32` holds the centred rows rounded to float32, `sq` and `norm` their (float64,
    centred) squared norm and norm, `proj` their projection on the search direction.
    Built in one chunked pass, so a large set is read once.
    """

    def __init__(self, x: np.ndarray, centre: np.ndarray, direction: np.ndarray, name: str, device):
        import torch

        n, dim = x.shape
        self.x = x  # (N, D) float32 or float64
        x32 = np.empty((n, dim), dtype=np.float32)
        self.sq, self.proj = np.empty(n), np.empty(n)
        step = max(1, (1 << 20) // dim)
        for start in range(0, n, step):
            centred = x[start : start + step].astype(np.float64) - centre  # (R, D)
            x32[start : start + step] = centred  # x' = fl32(x)
            self.sq[start : start + step] = np.einsum("ij,ij->i", centred, centred)  # |x|^2 = |x'|^2 (1 +- 3 u32)
            self.proj[start : start + step] = centred @ direction
        if not (np.isfinite(self.sq).all() and self.sq.max() < 1e36):  # float32 products must not overflow
            raise DfkdError(
                f"feature set {name} holds NaN, infinite or absurdly large (norm > 1e18) values; "
                "the teacher's features are broken."
            )
        self.x32 = torch.from_numpy(x32).to(device)  # (N, D)
        self.norm = np.sqrt(self.sq)  # (N,)


def _prepare(a: np.ndarray, b: np.ndarray, seed: int, device) -> tuple[_Set, _Set, np.random.Generator]:
    """Centre (any point will do: the mean of a sample) and search direction (roughly the
    principal axis of that sample) shared by both sets."""
    rng = np.random.default_rng(seed)
    sample = np.concatenate(
        [x[np.sort(rng.choice(len(x), min(len(x), 1024), replace=False))].astype(np.float64) for x in (a, b)]
    )
    sample = sample[np.isfinite(sample).all(axis=1)]  # NaN rows are reported by _Set
    centre = sample.mean(axis=0) if len(sample) else np.zeros(a.shape[1])
    sample -= centre
    covariance = sample.T @ sample  # (D, D)
    direction = np.eye(a.shape[1])[int(np.argmax(np.diag(covariance)))] if len(sample) else np.eye(a.shape[1])[0]
    for _ in range(50):  # power iteration; the direction only needs to be roughly right
        step = covariance @ direction
        norm = np.linalg.norm(step)
        if norm == 0.0 or not np.isfinite(norm):
            break
        direction = step / norm
    return _Set(a, centre, direction, "A", device), _Set(b, centre, direction, "B", device), rng


@contextlib.contextmanager
def _torch_settings(threads: int | None) -> Iterator[None]:
    """Full-precision float32 products (no TF32/bf16 shortcuts: the error bounds rely on
    it) and, if given, the number of CPU threads; both restored afterwards."""
    import torch

    precision, previous_threads = torch.get_float32_matmul_precision(), torch.get_num_threads()
    torch.set_float32_matmul_precision("highest")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.set_num_threads(previous_threads)


def _pair_distances(x: np.ndarray, y: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Float64 ||x[rows[k]] - y[cols[k]]|| for each k, measured directly (no expansion)."""
    out = np.empty(len(rows))
    chunk = max(1, (1 << 20) // x.shape[1])
    for start in range(0, len(rows), chunk):
        diff = x[rows[start : start + chunk]].astype(np.float64) - y[cols[start : start + chunk]]  # (P, D)
        out[start : start + chunk] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


# ---------------------------------------------------------------------------- the search
class _Search:
    """h(X, Y) for prepared sets: Y sorted by projection and cut into column blocks."""

    def __init__(self, xs: _Set, ys: _Set, block: int):
        import torch

        self.xs, self.ys = xs, ys
        dim = xs.x.shape[1]
        gamma = dim * U32 / (1 - dim * U32)
        # |float32 (|y|^2 - 2 x.y) - (|y'|^2 - 2 x'.y')| <= c32 (|x|^2 + |y|^2): products
        # (gamma), |x|^2 standing for |x'|^2 (3u), the rounded bias, the sum, the comparison;
        # doubled for safety. Centring, projection and re-measuring are float64 (eps64).
        self.c32 = 2 * gamma + 24 * U32
        self.tiny32 = 4 * (dim + 16) * 2.0**-149  # absolute: products that underflow to subnormals
        self.eps64 = 8 * (dim + 8) * U64
        self.order = np.argsort(ys.proj, kind="stable")  # sorted position -> row of Y
        self.y32 = ys.x32.index_select(0, torch.from_numpy(self.order).to(ys.x32.device))  # (N_y, D)
        bias = (1 - self.c32) * ys.sq[self.order]
        self.ybias32 = torch.from_numpy(bias.astype(np.float32)).to(self.y32.device)  # (N_y,)
        self.proj = ys.proj[self.order]
        n_y = len(self.order)
        self.starts = np.arange(0, n_y, block)
        self.ends = np.minimum(self.starts + block, n_y)
        self.lo, self.hi = self.proj[self.starts], self.proj[self.ends - 1]  # projection intervals
        self.ymax = np.maximum.reduceat(ys.norm[self.order], self.starts)  # max |y| per block

    def home(self, rows: np.ndarray) -> np.ndarray:
        """Column block whose projection interval holds (or is nearest to) each row's."""
        return np.clip(np.searchsorted(self.lo, self.xs.proj[rows], side="right") - 1, 0, len(self.starts) - 1)

    def probe(self, rows: np.ndarray, width: int = PROBE_WIDTH, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Bound each row's nearest-neighbour distance by one of the `width` rows of Y nearest
        to it in projection: where its duplicate or near-duplicate lies, if it has one.

        Returns (ub, arg): the distance from the row to Y's row at sorted position `arg`,
        measured exactly with `exact`, else bounded from above by float32 values plus their
        error bound (cheaper: most rows of unrelated sets leave on this bound alone, while
        near-duplicates need the exact value, the bound being coarser than their distance).
        """
        import torch

        n_y = len(self.order)
        width = min(width, n_y)
        device = self.y32.device
        nearest = np.empty(len(rows), dtype=np.int64)
        score = np.empty(len(rows))
        chunk = max(1, PROBE_CHUNK // (width * self.y32.shape[1]))  # cache-sized gathers: much faster
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            first = np.clip(np.searchsorted(self.proj, self.xs.proj[part]) - width // 2, 0, n_y - width)
            cols = first[:, None] + np.arange(width)  # (R, W) sorted positions
            flat = torch.from_numpy(cols.reshape(-1)).to(device)
            y = self.y32.index_select(0, flat).view(len(part), width, -1)  # (R, W, D)
            x = self.xs.x32.index_select(0, torch.from_numpy(part).to(device))  # (R, D)
            g = self.ybias32.index_select(0, flat).view(len(part), width)
            g = g - 2 * torch.einsum("rwd,rd->rw", y, x)  # (R, W) g = (1 - c32) |y|^2 - 2 x.y
            low = g.min(dim=1)
            nearest[i : i + len(part)] = cols[np.arange(len(part)), low.indices.cpu().numpy()]
            score[i : i + len(part)] = low.values.cpu().numpy()
        if exact:
            return self.remeasure(rows, nearest), nearest
        return self._upper_bound(rows, nearest, score), nearest

    def _upper_bound(self, rows: np.ndarray, cols: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Upper bound of ||x - y|| (original coordinates) from the float32 value g of a pair.

        |x'-y'|^2 <= g + (1 + c32) |x|^2 + 2 c32 |y|^2 (the float32 error bound, generously),
        then ||x - y|| <= ||x' - y'|| + u32 (|x| + |y|) + the float64 slack.
        """
        sq_x, sq_y = self.xs.sq[rows], self.ys.sq[self.order[cols]]
        d2 = g + (1 + self.c32) * sq_x + 2 * self.c32 * sq_y + self.tiny32
        size = self.xs.norm[rows] + np.sqrt(sq_y)
        d = np.sqrt(np.maximum(d2, 0.0) * (1 + 4 * U32))
        return d + 1.01 * U32 * size + self.eps64 * (size + d)

    def remeasure(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact float64 distance from each row to Y's row at sorted position `cols`."""
        return _pair_distances(self.xs.x, self.ys.x, rows, self.order[cols])

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like `probe`, against one shared sample `cols` (sorted positions) of Y: a dense
        product, as cheap per pair as the blocks. Finds some b within L for most rows of
        unrelated sets, the way early break's random order does."""
        import torch

        device = self.y32.device
        index = torch.from_numpy(cols).to(device)
        y, bias = self.y32.index_select(0, index), self.ybias32.index_select(0, index)  # (P, D), (P,)
        nearest = np.empty(len(rows), dtype=np.int64)
        for i in range(0, len(rows), ROW_BLOCK):
            x = self.xs.x32.index_select(0, torch.from_numpy(rows[i : i + ROW_BLOCK]).to(device))  # (R, D)
            g = torch.addmm(bias.unsqueeze(0), x, y.T, alpha=-2.0)  # (R, P)
            nearest[i : i + len(x)] = cols[g.argmin(dim=1).cpu().numpy()]
        return _pair_distances(self.xs.x, self.ys.x, rows, self.order[nearest]), nearest

    def scan(self, rows: np.ndarray, ub: np.ndarray, arg: np.ndarray, limit_l: float) -> np.ndarray:
        """Refine ub/arg (in place) of `rows` over every block that could hold a closer b.

        Rows whose ub falls to `limit_l` or below stop early (they cannot raise the maximum).
        Returns a mask of the rows that did not stop: their ub is their exact distance.
        """
        import torch

        xs = self.xs
        proj_x, norm_x, sq_x = xs.proj[rows], xs.norm[rows], xs.sq[rows]
        x32 = xs.x32.index_select(0, torch.from_numpy(rows).to(xs.x32.device))  # (R, D)
        # Blocks nearest to the group's projection interval first.
        gap = np.maximum(0.0, np.maximum(self.lo - proj_x.max(), proj_x.min() - self.hi))
        centre = np.searchsorted(self.lo, np.median(proj_x), side="right") - 1
        block_order = np.lexsort((np.abs(np.arange(len(self.starts)) - centre), gap))
        active = ub > limit_l
        for k in block_order:
            live = np.flatnonzero(active)
            if len(live) == 0:
                break
            # 1. Projection bound: skip rows this block cannot bring closer.
            p = proj_x[live]
            row_gap = np.maximum(0.0, np.maximum(self.lo[k] - p, p - self.hi[k]))
            live = live[row_gap - self.eps64 * (norm_x[live] + self.ymax[k] + row_gap) <= ub[live]]
            if len(live) == 0:
                continue
            s, e = self.starts[k], self.ends[k]
            # 2. Float32 squared distances less |x|^2 and the error allowance c32 |y|^2:
            #    g = (1 - c32) |y|^2 - 2 x.y, so that d2 - E = g + (1 - c32) |x|^2.
            index = torch.from_numpy(live).to(x32.device)
            x = x32.index_select(0, index)  # (R, D)
            g = torch.addmm(self.ybias32[s:e].unsqueeze(0), x, self.y32[s:e].T, alpha=-2.0)  # (R, C)
            two = torch.topk(g, min(2, e - s), dim=1, largest=False)
            low = two.values.cpu().numpy().astype(np.float64)  # (R, 1 or 2)
            nearest = s + two.indices[:, 0].cpu().numpy()
            self._improve(rows, ub, arg, live, nearest)
            # 3. Re-measure every other b the float32 values cannot rule out (true d < ub
            #    possible): g <= (ub + slack)^2 - (1 - c32) |x|^2, float32 rounding allowed for.
            slack = U32 * 1.01 * (norm_x[live] + self.ymax[k]) + self.eps64 * (norm_x[live] + self.ymax[k] + ub[live])
            reach = (ub[live] + slack) ** 2
            limit = reach - (1 - self.c32) * sq_x[live] + 4 * U32 * (reach + sq_x[live]) + 2 * self.tiny32
            if low.shape[1] == 2 and (crowded := np.flatnonzero(low[:, 1] <= limit)).size:
                sub = torch.from_numpy(crowded).to(g.device)
                limit32 = torch.from_numpy(limit[crowded].astype(np.float32)).to(g.device)
                pick = (g[sub] <= limit32.unsqueeze(1)).nonzero().cpu().numpy()
                self._improve(rows, ub, arg, live[crowded[pick[:, 0]]], s + pick[:, 1])
            # 4. Early break: rows already within L cannot raise the maximum.
            active[live[ub[live] <= limit_l]] = False
        return active

    def _improve(self, rows, ub, arg, r: np.ndarray, c: np.ndarray) -> None:
        """Measure pairs (rows[r], sorted column c) in float64; keep each row's nearest."""
        dist = _pair_distances(self.xs.x, self.ys.x, rows[r], self.order[c])
        first = np.lexsort((c, dist, r))  # per row: nearest, ties to the lowest column
        r, c, dist = r[first], c[first], dist[first]
        keep = np.r_[True, r[1:] != r[:-1]]
        r, c, dist = r[keep], c[keep], dist[keep]
        better = dist < ub[r]
        ub[r[better]], arg[r[better]] = dist[better], c[better]


def _directed(xs: _Set, ys: _Set, rng: np.random.Generator, block: int,
              desc: str | None = None) -> tuple[float, int, int]:
    search = _Search(xs, ys, block)
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
    a, b = _as_features(a, "A"), _as_features(b, "B")
    _check_dims(a, b)
    block = _check_block(block)
    with _torch_settings(threads):
        xs, ys, rng = _prepare(a, b, seed, device)
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
    a, b = _as_features(a, "A"), _as_features(b, "B")
    _check_dims(a, b)
    block = _check_block(block)
    with _torch_settings(threads):
        xs, ys, rng = _prepare(a, b, seed, device)
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


def _check_dims(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise DfkdError(
            f"feature sets have different dimensions ({a.shape[1]} and {b.shape[1]}); both must be "
            "features of the same teacher layer."
        )


def _check_block(block: int) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise DfkdError(f"hausdorff: block must be a positive integer, got {block!r}.")
    return int(block)


# ---------------------------------------------------------------------------- files
def _read_rows(path: Path, index: np.ndarray | None) -> np.ndarray:
    """Rows `index` (in that order; all rows if None) of `path:/features`, read in chunks."""
    with open_h5(path) as handle:
        dataset = h5_dataset(handle, "features", ndim=2, dtypes=("f4", "f8"))
        n = dataset.shape[0]
        if index is None:
            return dataset[()]
        index = np.asarray(index, dtype=np.int64)
        bad = index[(index < 0) | (index >= n)]
        if len(bad):
            raise DfkdError(
                f"{path}:/features has {n} rows but the selection asks for row {int(bad[0])}; "
                "the manifest and the features file do not match. Re-run the stale rule."
            )
        out = np.empty((len(index), dataset.shape[1]), dtype=dataset.dtype)
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        for start in range(0, n, READ_CHUNK):
            lo, hi = np.searchsorted(sorted_index, [start, start + READ_CHUNK])
            if lo == hi:
                continue
            stop = int(sorted_index[hi - 1]) + 1
            chunk = dataset[start:stop]
            out[order[lo:hi]] = chunk[sorted_index[lo:hi] - start]
        return out


def gather_features(manifest, feature_files: Mapping[str, Path]) -> np.ndarray:
    """Features of a manifest's rows, in manifest order, from each row's source file.

    `manifest` has `source` and `index` columns; `feature_files` maps a source name to its
    `features/{source}.h5`. Returns `[len(manifest), D]` (float32 unless a file is float64).
    """
    for column in ("source", "index"):
        if column not in manifest.columns:
            raise DfkdError(f"manifest lacks column '{column}' (it has {list(manifest.columns)}).")
    sources = manifest["source"].to_numpy()
    index = manifest["index"].to_numpy(dtype=np.int64)
    names = list(dict.fromkeys(sources.tolist()))
    missing = [name for name in names if name not in feature_files]
    if missing:
        raise DfkdError(
            f"no features file given for source(s) {missing} of the manifest "
            f"(given: {sorted(feature_files)}). Pass one features file per source."
        )
    parts = {}
    for name in names:
        rows = np.flatnonzero(sources == name)
        parts[name] = (rows, _read_rows(Path(feature_files[name]), index[rows]))
    dims = {name: block.shape[1] for name, (_, block) in parts.items()}
    if len(set(dims.values())) > 1:
        raise DfkdError(f"features of the manifest's sources differ in dimension: {dims}. Use one teacher.")
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    dtype = np.result_type(*[block.dtype for _, block in parts.values()])
    out = np.empty((len(manifest), next(iter(dims.values()))), dtype=dtype)
    for rows, block in parts.values():
        out[rows] = block
    return out


def _selection(rows_path: Path | None) -> np.ndarray | None:
    if rows_path is None:
        return None
    manifest = read_parquet(rows_path, required_columns=["index"])
    if "source" in manifest.columns and manifest["source"].nunique() > 1:
        raise DfkdError(
            f"{rows_path} lists rows of several sources ({sorted(manifest['source'].unique())}); one "
            "features file cannot hold them. Gather the set's features first "
            "(dfkd.hausdorff.gather_features, or `dfkd distance`)."
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
