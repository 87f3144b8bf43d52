"""Rank correlations of a transfer-set score with student accuracy, and the quality verdict.

Inputs: one value per transfer set for each score or distance (`quality/{set}.json`) and the
mean student accuracy per set. Outputs: plain dicts for the `quality` study table.

- `rank_correlation`: Spearman's rho and Kendall's tau-b (as scipy.stats.spearmanr /
  kendalltau compute them, ties averaged), each with a percentile bootstrap interval:
  resample the sets with replacement (seeded), recompute; a resample in which either
  variable is constant has no correlation and is left out (`valid_resamples` counts the rest).
- `verdict`: does some data-free score rank transfer sets at least as well as the Hausdorff
  distance? Each correlation is taken in its metric's expected direction
  (`dfkd.stages.set_scores.DIRECTIONS`: +1 when higher should mean a better student, -1 for
  distances), so a score that ranks sets backwards does not count as a good ranker. The
  statement holds when the best data-free score's directed Spearman rho is >= the Hausdorff
  distance's (`holds`, on the point estimates). A paired bootstrap of the difference says how
  sure that is, and decides the `label` as the replicate claims do (dfkd.analysis.stats): `holds` when
  its interval lies at or above 0, `does not hold` when it lies below 0, `inconclusive` when it
  straddles 0. The best score is picked after seeing the data, so that interval is optimistic.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np

from dfkd.analysis.stats import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_MEASURED

RESAMPLES = 2000
LEVEL = 0.95
STATEMENT = "some data-free score ranks transfer sets at least as well as the Hausdorff distance"


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"score and accuracy must be 1-D arrays of one length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)  # a set without the value (or without students) drops out
    return x[keep], y[keep]


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of x, y [B, n]: Pearson's r of the average ranks."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    return np.clip(r, -1.0, 1.0)  # NaN where a row is constant


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair: sum sx sy / sqrt(sum sx^2 sum sy^2) over pairs."""
    n = x.shape[1]
    out = np.empty(len(x))
    step = max(1, (1 << 22) // max(1, n * n))
    for s in range(0, len(x), step):
        sx = np.sign(x[s : s + step, :, None] - x[s : s + step, None, :])  # (b, n, n)
        sy = np.sign(y[s : s + step, :, None] - y[s : s + step, None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
            out[s : s + step] = (sx * sy).sum(axis=(1, 2)) / norm
    return out


def _interval(values: np.ndarray, level: float) -> list[float]:
    valid = values[np.isfinite(values)]
    if len(valid) == 0:
        return [float("nan"), float("nan")]
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(valid, tail)), float(np.percentile(valid, 100 - tail))]


def _resamples(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (B, n) set positions


def rank_correlation(score, accuracy, *, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict:
    """Spearman and Kendall (tau-b) between a score and the mean accuracy, over the sets
    where both are finite, each with a percentile bootstrap interval (`level`)."""
    x, y = _pairs(score, accuracy)
    n = len(x)
    nan = float("nan")
    result = {"n": n, "spearman": nan, "spearman_ci": [nan, nan], "kendall": nan, "kendall_ci": [nan, nan],
              "resamples": resamples, "valid_resamples": 0, "level": level, "seed": seed}
    if n < 2:
        return result
    result["spearman"] = float(_spearman_rows(x[None], y[None])[0])
    result["kendall"] = float(_kendall_rows(x[None], y[None])[0])
    pick = _resamples(n, resamples, seed)
    rho, tau = _spearman_rows(x[pick], y[pick]), _kendall_rows(x[pick], y[pick])
    result["spearman_ci"], result["kendall_ci"] = _interval(rho, level), _interval(tau, level)
    result["valid_resamples"] = int(np.count_nonzero(np.isfinite(rho)))
    return result


def verdict(
    values: Mapping[str, Sequence[float]],
    accuracy: Sequence[float],
    *,
    candidates: Sequence[str] | None = None,
    reference: str = "hausdorff",
    directions: Mapping[str, int] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict:
    """Whether some data-free score ranks the sets at least as well as `reference`.

    `values` maps a metric to one value per set (aligned with `accuracy`; NaN where
    missing). `candidates` defaults to the data-free scores present. Returns `statement`,
    `holds` on the point estimates (None when the reference or every candidate lacks a
    correlation), `best`, the directed Spearman rho of every metric (`directed_spearman`),
    `best_rho`, `reference_rho`, `difference` (best - reference) and its paired bootstrap
    interval over the sets where both are finite (`difference_ci`), the `label` that interval
    decides (`verdict_label`), and the `criterion` in words.
    """
    from dfkd.stages.set_scores import DATA_FREE, DIRECTIONS

    directions = DIRECTIONS if directions is None else directions
    if candidates is None:
        candidates = [name for name in DATA_FREE if name in values]
    directed = {}
    for name in [*candidates, reference]:
        if name in values:
            directed[name] = directions[name] * rank_correlation(values[name], accuracy, resamples=0)["spearman"]
    nan = float("nan")
    finite = [name for name in candidates if np.isfinite(directed.get(name, nan))]
    result = {"statement": STATEMENT, "holds": None, "label": "not measured", "best": None, "directed_spearman": directed,
              "best_rho": nan, "reference": reference, "reference_rho": directed.get(reference, nan),
              "difference": nan, "difference_ci": [nan, nan], "level": level, "resamples": resamples, "seed": seed,
              "criterion": ("max over data-free scores of Spearman rho x expected direction >= the same for "
                            f"{reference} (point estimates)")}
    if not finite or not np.isfinite(result["reference_rho"]):
        return result
    best = max(finite, key=lambda name: directed[name])
    result.update(best=best, best_rho=directed[best], holds=bool(directed[best] >= result["reference_rho"]))
    result["difference"] = directed[best] - result["reference_rho"]
    # Paired bootstrap: the same resampled sets for both metrics.
    b, r, acc = (np.asarray(v, np.float64) for v in (values[best], values[reference], accuracy))
    keep = np.isfinite(b) & np.isfinite(r) & np.isfinite(acc)
    b, r, acc = b[keep], r[keep], acc[keep]
    if len(acc) >= 2:
        pick = _resamples(len(acc), resamples, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            diff = (directions[best] * _spearman_rows(b[pick], acc[pick])
                    - directions[reference] * _spearman_rows(r[pick], acc[pick]))
        result["difference_ci"] = _interval(diff, level)
    result["label"] = verdict_label(*result["difference_ci"])
    return result


def verdict_label(low: float, high: float) -> str:
    """The claim 'difference >= 0' decided by its interval, in dfkd.analysis.stats' words: `holds`
    (low >= 0: "at least as well", so a tie counts, unlike stats.verdict_of's strict "better"),
    `does not hold` (high < 0), `inconclusive` (it straddles 0) or `not measured` (no interval)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return NOT_MEASURED
    return HOLDS if low >= 0 else DOES_NOT_HOLD if high < 0 else INCONCLUSIVE
