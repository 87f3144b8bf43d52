"""Replicate statistics: every number over seeds, and every claim decided from paired runs.

One module for the summary and every study table, so that no table computes statistics on its
own:
- `summarize(values)`: mean, sample standard deviation (ddof = 1) and n;
- `paired_claim(claim, better, worse)`: a claim "better > worse" compared seed by seed (the same
  seed on both sides), with the mean difference and a 95% Student's t interval over the paired
  differences, and a verdict:
    holds          the interval lies entirely above 0 (the claimed side);
    does not hold  it lies entirely below 0;
    inconclusive   it contains 0;
    single seed    one pair only: there is no interval, so nothing is decided;
    not measured   no seed has both sides.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, SINGLE_SEED, NOT_MEASURED = (
    "holds", "does not hold", "inconclusive", "single seed", "not measured")


@dataclass(frozen=True)
class Summary:
    mean: float
    sd: float  # NaN with fewer than two values
    n: int


def summarize(values: Iterable[float]) -> Summary:
    """Mean, sample standard deviation (n - 1 in the denominator) and count of finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Summary(math.nan, math.nan, 0)
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    return Summary(mean, sd, n)


def t_interval(differences: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, int]:
    """(mean, low, high, n): Student's t interval of the mean of paired differences.

    mean +- t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n); low = high = NaN for n < 2.
    """
    s = summarize(differences)
    if s.n < 2:
        return s.mean, math.nan, math.nan, s.n
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, s.n - 1)) * s.sd / math.sqrt(s.n)
    return s.mean, s.mean - half, s.mean + half, s.n


def verdict_of(low: float, high: float, n: int) -> str:
    if n == 0:
        return NOT_MEASURED
    if n == 1:
        return SINGLE_SEED
    if low > 0:
        return HOLDS
    if high < 0:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


@dataclass(frozen=True)
class Claim:
    """A claim 'A > B' decided from paired runs; difference = A - B (in the claim's unit)."""

    claim: str
    difference_mean: float
    ci_low: float
    ci_high: float
    n: int
    verdict: str
    unit: str = "points"

    def as_record(self) -> dict:
        """The JSON form: {claim, difference_mean, ci_low, ci_high, n, verdict} (NaN -> None)."""
        record = asdict(self)
        record.pop("unit")
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}

    def line(self) -> str:
        """One Markdown line: the claim, its verdict, the paired difference and its interval."""
        if self.n == 0:
            return f"{self.claim}: **{self.verdict}** (no seed has both sides)"
        evidence = f"mean paired difference {self.difference_mean:+.2f} {self.unit}"
        if self.n == 1:
            return f"{self.claim}: **{self.verdict}** ({evidence}, n = 1: one seed gives no interval, so nothing is decided)"
        return (f"{self.claim}: **{self.verdict}** ({evidence}, {CONFIDENCE:.0%} CI "
                f"[{self.ci_low:+.2f}, {self.ci_high:+.2f}], n = {self.n} paired seeds)")


def paired_claim(claim: str, better: Mapping[int, float], worse: Mapping[int, float], unit: str = "points") -> Claim:
    """'better > worse', compared on the seeds both sides have (seed -> value)."""
    seeds = sorted(set(better) & set(worse))
    differences = [float(better[s]) - float(worse[s]) for s in seeds]
    mean, low, high, n = t_interval(differences)
    return Claim(claim, mean, low, high, n, verdict_of(low, high, n), unit)
