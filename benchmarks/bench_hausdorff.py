"""Exact Hausdorff distance: dfkd.stages.hausdorff vs scipy.spatial.distance.directed_hausdorff.

Feature-like sets (ReLU of a low-rank Gaussian plus noise, like a teacher's penultimate
layer) at the study's sizes: A is the training set (60k rows), B a transfer set (10k rows).
Cases:
- random: B drawn from a shifted distribution (an arbitrary transfer set);
- same-distribution: B drawn independently from A's distribution (a natural transfer set);
- subset: B is 10k rows of A (h(B, A) = 0: the slow case of early break);
- near-duplicate: those rows moved by ~1e-4 of their norm.
Both tools compute both directions; scipy's float64 result is the reference ("exact?"
means |dfkd - scipy| <= 1e-9 relative in both directions). Times: best of up to 3 runs
per tool, fewer once a tool has spent 10 s (the same rule for both).

    python benchmarks/bench_hausdorff.py            # 60k x 10k, D = 84 (LeNet-5) and 256 (AlexNet)
    python benchmarks/bench_hausdorff.py --quick    # 6k x 1k, D = 84
    python benchmarks/bench_hausdorff.py --threads 1   # one core each, the fairest comparison
Never run as a test.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch  # imported before timing: its import takes seconds
from scipy.spatial.distance import directed_hausdorff
from threadpoolctl import threadpool_limits

from dfkd.stages.hausdorff import hausdorff


def feature_like(rng: np.random.Generator, n: int, mixing: np.ndarray, shift: float) -> np.ndarray:
    rank, dim = mixing.shape
    z = rng.standard_normal((n, rank)) @ mixing + shift + 0.5 * rng.standard_normal((n, dim))
    return np.maximum(z, 0.0).astype(np.float32)  # (n, D), like ReLU features


def cases(n_a: int, n_b: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((16, dim))
    a = feature_like(rng, n_a, mixing, 0.0)
    picked = a[rng.choice(n_a, n_b, replace=False)]
    scale = float(np.linalg.norm(picked, axis=1).mean())
    yield "random", a, feature_like(rng, n_b, mixing, 0.3)
    yield "same-distribution", a, feature_like(rng, n_b, mixing, 0.0)
    yield "subset", a, picked
    noise = (1e-4 * scale / np.sqrt(dim)) * rng.standard_normal(picked.shape)  # ~1e-4 of the norm
    yield "near-duplicate", a, picked + noise.astype(np.float32)


def timed(function, repeats: int = 3, budget: float = 10.0):
    """Result and best wall time of up to `repeats` runs (fewer once `budget` seconds are spent)."""
    times, value = [], None
    while len(times) < repeats and sum(times) < budget:
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return value, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6k x 1k instead of 60k x 10k")
    parser.add_argument("--dims", type=int, nargs="+", help="feature dimensions (default 84 and 256; quick: 84)")
    parser.add_argument("--no-scipy", action="store_true", help="time dfkd only")
    parser.add_argument("--threads", type=int, help="threads for torch and BLAS (default: torch's; scipy uses 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    print(f"dfkd threads: {torch.get_num_threads()} (scipy: 1)")
    hausdorff(np.zeros((3, 2)), np.ones((2, 2)))  # warm up torch's kernels
    n_a, n_b = (6_000, 1_000) if args.quick else (60_000, 10_000)
    dims = args.dims or ([84] if args.quick else [84, 256])

    header = f"{'case':<18} {'n_a':>6} {'n_b':>6} {'D':>4} {'dfkd s':>8} {'scipy s':>8} {'ratio':>7}  exact?  H"
    print(header)
    print("-" * len(header))
    for dim in dims:
        for name, a, b in cases(n_a, n_b, dim):
            ours, t_ours = timed(lambda: hausdorff(a, b))
            if args.no_scipy:
                print(f"{name:<18} {n_a:>6} {n_b:>6} {dim:>4} {t_ours:>8.2f} {'-':>8} {'-':>7}  -       "
                      f"{ours['hausdorff']:.6g}")
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            (ref_ab, ref_ba), t_ref = timed(lambda: (directed_hausdorff(a64, b64, seed=0)[0],
                                                     directed_hausdorff(b64, a64, seed=0)[0]))
            exact = all(
                abs(got - want) <= 1e-9 * max(want, 1e-300) + (1e-300 if want == 0 else 0.0)
                for got, want in ((ours["directed_ab"], ref_ab), (ours["directed_ba"], ref_ba))
            )
            print(f"{name:<18} {n_a:>6} {n_b:>6} {dim:>4} {t_ours:>8.2f} {t_ref:>8.2f} {t_ref / t_ours:>6.1f}x"
                  f"  {'yes' if exact else 'NO':<6}  {ours['hausdorff']:.6g}", flush=True)


if __name__ == "__main__":
    main()
