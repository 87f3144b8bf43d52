"""Replicate statistics: every number over seeds, and every claim decided from paired runs.

One module for the summary, every study table and `dfkd claim`, so that no table computes
statistics on its own:
- `summarize(values)`: mean, sample standard deviation (ddof = 1) and n;
- `paired_claim(claim, better, worse, min_effect)`: a claim "better > worse" compared seed by
  seed (the same seed on both sides). Its evidence: the paired seeds and differences, their mean,
  the 95% Student's t interval, the two-sided p of the paired t test, and, where the claim has a
  smallest effect that matters (`min_effect`, in the claim's unit), the 90% interval of two
  one-sided tests (TOST). Its verdict:
    holds          the 95% interval lies entirely above 0 (the claimed side);
    does not hold  it lies entirely below 0;
    equivalent     neither, and the 90% interval lies strictly inside (-min_effect, +min_effect):
                   the difference is shown to be smaller than any effect that matters;
    inconclusive   none of these;
    single seed    one pair only: there is no interval, so nothing is decided;
    not measured   no seed has both sides.
  Where a difference both holds and lies inside the band, "holds" wins and the claim says the
  effect is smaller than min_effect.
- `holm(claims)`: a table's claims as one family; each gets its Holm-adjusted verdict, which
  keeps the chance of any false "holds"/"does not hold" (and, as a second family, any false
  "equivalent") at 5% over the whole table.
- `seeds_needed(effect, sd)`: the paired seeds that give 80% power to decide an effect of that
  size (two-sided paired t test at 5%, from the noncentral t distribution).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.80
MAX_SEEDS = 10_000  # seeds_needed gives None past this
HOLDS, DOES_NOT_HOLD, EQUIVALENT, INCONCLUSIVE, SINGLE_SEED, NOT_MEASURED = (
    "holds", "does not hold", "equivalent", "inconclusive", "single seed", "not measured")
DECIDED = (HOLDS, DOES_NOT_HOLD, EQUIVALENT)


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


def t_p_value(mean: float, sd: float, n: int) -> float:
    """Two-sided p of the one-sample t test of mean = 0 (scipy's ttest_1samp); NaN for n < 2.
    With zero spread the mean is known exactly: p = 0 unless it is 0."""
    if n < 2:
        return math.nan
    if sd == 0:
        return 0.0 if mean != 0 else 1.0
    t = mean / (sd / math.sqrt(n))
    return float(2 * scipy_stats.t.sf(abs(t), n - 1))


def tost_p_value(mean: float, sd: float, n: int, band: float) -> float:
    """p of two one-sided t tests that the mean lies inside (-band, +band): the larger of the two
    one-sided p values. It is below alpha exactly when the (1 - 2 alpha) interval lies inside."""
    if n < 2:
        return math.nan
    if sd == 0:
        return 0.0 if abs(mean) < band else 1.0
    se = sd / math.sqrt(n)
    above_low = scipy_stats.t.sf((mean + band) / se, n - 1)   # H0: mean <= -band
    below_high = scipy_stats.t.cdf((mean - band) / se, n - 1)  # H0: mean >= +band
    return float(max(above_low, below_high))


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest paired seeds n >= 2 whose two-sided paired t test at `alpha` detects a true mean
    difference `effect` with probability `power`, when the differences' sd is `sd`. The test
    rejects when |t| > t_{1 - alpha/2, n-1}; t follows a noncentral t with n - 1 degrees of
    freedom and noncentrality effect * sqrt(n) / sd. None when no number up to MAX_SEEDS does
    (or the effect is 0, or the sd unknown)."""
    if not (math.isfinite(effect) and math.isfinite(sd)) or effect == 0:
        return None
    if sd == 0:
        return 2
    n = np.arange(2, MAX_SEEDS + 1)
    df = n - 1
    critical = scipy_stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) * np.sqrt(n) / sd
    upper = scipy_stats.nct.sf(critical, df, shift)
    # the far tail: scipy's noncentral t returns NaN there for large shifts, where it is ~0
    lower = np.nan_to_num(scipy_stats.nct.cdf(-critical, df, shift), nan=0.0)
    achieved = upper + lower
    enough = np.flatnonzero(achieved >= power)
    return int(n[enough[0]]) if enough.size else None


def verdict_of(low: float, high: float, n: int, band_low: float = math.nan, band_high: float = math.nan,
               min_effect: float | None = None) -> str:
    """The verdict from the 95% interval [low, high] and, with a min_effect, the 90% interval."""
    if n == 0:
        return NOT_MEASURED
    if n == 1:
        return SINGLE_SEED
    if low > 0:
        return HOLDS
    if high < 0:
        return DOES_NOT_HOLD
    if min_effect is not None and -min_effect < band_low and band_high < min_effect:
        return EQUIVALENT
    return INCONCLUSIVE


def _number(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def _seeds_text(n: int | None) -> str:
    return f"about {n}" if n is not None else f"more than {MAX_SEEDS:,}"


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
    seeds: tuple[int, ...] = ()
    differences: tuple[float, ...] = ()
    difference_sd: float = math.nan
    p_value: float = math.nan            # two-sided paired t test of difference = 0
    min_effect: float | None = None      # the band of 'equivalent' (None: the claim has none)
    equivalence_low: float = math.nan    # the 90% interval TOST decides on
    equivalence_high: float = math.nan
    p_equivalence: float = math.nan      # TOST p
    seeds_needed: int | None = None      # 80% power at the observed difference
    seeds_needed_min_effect: int | None = None  # 80% power at min_effect
    holm_verdict: str | None = None      # set by holm(): the verdict within its table's family
    holm_p: float = math.nan
    holm_p_equivalence: float = math.nan
    family_size: int = 1

    def as_record(self) -> dict:
        """The JSON form: the verdicts and every number behind them, the seeds and per-seed
        differences included, so anyone can recompute the interval (NaN -> None)."""
        record = asdict(self)
        record.pop("unit")
        record["seeds"], record["differences"] = list(self.seeds), list(self.differences)
        return {k: _number(v) for k, v in record.items()}

    def seeds_advice(self) -> str:
        """What more seeds would settle, for a claim that is not decided (empty otherwise)."""
        if self.n < 2 or self.verdict in DECIDED:
            return ""
        parts = []
        if self.difference_mean != 0:
            parts.append(f"{_seeds_text(self.seeds_needed)} seeds would decide an effect of this size "
                         f"({self.difference_mean:+.2f})")
        if self.min_effect is not None:
            parts.append(f"{_seeds_text(self.seeds_needed_min_effect)} seeds would decide one of {self.min_effect:g} {self.unit}, "
                         "the smallest that matters (min_effect)")
        return "; ".join(parts)

    def line(self) -> str:
        """One Markdown line: the claim, its verdicts, the paired difference and its interval."""
        if self.n == 0:
            return f"{self.claim}: **{self.verdict}** (no seed has both sides)"
        evidence = f"mean paired difference {self.difference_mean:+.2f} {self.unit}"
        if self.n == 1:
            return f"{self.claim}: **{self.verdict}** ({evidence}, n = 1: one seed gives no interval, so nothing is decided)"
        text = (f"{self.claim}: **{self.verdict}** ({evidence}, {CONFIDENCE:.0%} CI "
                f"[{self.ci_low:+.2f}, {self.ci_high:+.2f}], n = {self.n} paired seeds")
        if self.min_effect is not None and self.verdict in (HOLDS, DOES_NOT_HOLD) and \
                -self.min_effect < self.equivalence_low and self.equivalence_high < self.min_effect:
            text += f"; smaller than {self.min_effect:g} {self.unit}"
        text += ")"
        if self.holm_verdict is not None and self.family_size > 1:
            text += f"; Holm over {self.family_size} claims: **{self.holm_verdict}**"
        advice = self.seeds_advice()
        return f"{text}; {advice}" if advice else text


def paired_claim(claim: str, better: Mapping[int, float], worse: Mapping[int, float], unit: str = "points",
                 min_effect: float | None = None) -> Claim:
    """'better > worse', compared on the seeds both sides have (seed -> value). With a
    `min_effect` (in `unit`), the claim can also be found equivalent: within +- min_effect."""
    seeds = tuple(sorted(set(better) & set(worse)))
    differences = tuple(float(better[s]) - float(worse[s]) for s in seeds)
    spread = summarize(differences)
    mean, low, high, n = t_interval(differences)
    band_low = band_high = p_equivalence = math.nan
    needed_min = None
    if min_effect is not None:
        _, band_low, band_high, _ = t_interval(differences, 1 - 2 * ALPHA)
        p_equivalence = tost_p_value(mean, spread.sd, n, min_effect)
        needed_min = seeds_needed(min_effect, spread.sd)
    verdict, p_value = verdict_of(low, high, n, band_low, band_high, min_effect), t_p_value(mean, spread.sd, n)
    return Claim(  # alone, a claim is a family of one: its Holm verdict and p are its own
        claim, mean, low, high, n, verdict, unit,
        seeds=seeds, differences=differences, difference_sd=spread.sd, p_value=p_value,
        min_effect=min_effect, equivalence_low=band_low, equivalence_high=band_high, p_equivalence=p_equivalence,
        seeds_needed=seeds_needed(mean, spread.sd), seeds_needed_min_effect=needed_min,
        holm_verdict=verdict, holm_p=p_value, holm_p_equivalence=p_equivalence,
    )


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values (NaN stays NaN and is not counted in the family):
    the i-th smallest p becomes max over j <= i of min(1, (m - j + 1) * p_(j))."""
    tested = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    order = sorted(tested, key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _holm_levels(p_values: Sequence[float]) -> list[float | None]:
    """Each test's Holm level alpha / (m - rank) while the step-down goes on, None once it stops
    (a test whose p is NaN or lies past the first failure is not rejected)."""
    tested = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    order = sorted(tested, key=lambda i: p_values[i])
    levels: list[float | None] = [None] * len(p_values)
    for rank, i in enumerate(order):
        level = ALPHA / (len(order) - rank)
        if not p_values[i] <= level:
            break
        levels[i] = level
    return levels


def holm(claims: Sequence[Claim]) -> list[Claim]:
    """The claims as one family: each gets `holm_verdict`, `holm_p` and `holm_p_equivalence`.

    "holds"/"does not hold" survive Holm when the claim's difference test is rejected in Holm's
    step-down at its level alpha / (m - rank + 1); the verdict is then read from the interval at
    that level (1 - level confidence), so that a family of one gives the claim's own verdict.
    "equivalent" is a second family of the TOST p values, decided the same way with the
    (1 - 2 level) interval. Single-seed and unmeasured claims are outside both families."""
    p_diff = [c.p_value for c in claims]
    p_equiv = [c.p_equivalence for c in claims]
    diff_levels, equiv_levels = _holm_levels(p_diff), _holm_levels(p_equiv)
    adjusted_diff, adjusted_equiv = holm_adjusted(p_diff), holm_adjusted(p_equiv)
    size = sum(math.isfinite(p) for p in p_diff)
    out = []
    for claim, d_level, e_level, p_d, p_e in zip(claims, diff_levels, equiv_levels, adjusted_diff, adjusted_equiv):
        verdict = claim.verdict if claim.n < 2 else INCONCLUSIVE
        if claim.n >= 2 and d_level is not None:
            _, low, high, _ = t_interval(claim.differences, 1 - d_level)
            verdict = verdict_of(low, high, claim.n)
        if verdict == INCONCLUSIVE and e_level is not None and claim.min_effect is not None:
            _, low, high, _ = t_interval(claim.differences, 1 - 2 * e_level)
            if -claim.min_effect < low and high < claim.min_effect:
                verdict = EQUIVALENT
        out.append(replace(claim, holm_verdict=verdict, holm_p=p_d, holm_p_equivalence=p_e, family_size=size))
    return out


def _interval(low: float, high: float) -> str:
    return f"[{low:+.2f}, {high:+.2f}]" if math.isfinite(low) and math.isfinite(high) else "-"


def _needed(claim: Claim, n: int | None, effect: float | None) -> str:
    if claim.n < 2 or effect is None or effect == 0 or not math.isfinite(effect):
        return "-"
    return str(n) if n is not None else f"> {MAX_SEEDS:,}"


def claims_rows(claims: Sequence[Claim]) -> list[dict[str, str]]:
    """The claims as table rows (Markdown and LaTeX): claim, n, mean paired difference, 95% CI,
    verdict, Holm verdict, and the paired seeds 80% power needs at the observed difference and
    at min_effect ('-' where nothing can be said, '> 10,000' where no number of seeds would do)."""
    size = max((c.family_size for c in claims), default=0)
    rows = []
    for c in claims:
        rows.append({
            "claim": c.claim,
            "n": str(c.n),
            "difference": f"{c.difference_mean:+.2f}" if math.isfinite(c.difference_mean) else "-",
            f"{CONFIDENCE:.0%} CI": _interval(c.ci_low, c.ci_high),
            "verdict": c.verdict,
            f"Holm ({size} claims)": c.holm_verdict or c.verdict,
            "seeds needed (this effect)": _needed(c, c.seeds_needed, c.difference_mean),
            "seeds needed (min effect)": _needed(c, c.seeds_needed_min_effect, c.min_effect),
        })
    return rows


METHOD = (
    "Each claim compares paired runs (the same seed on both sides): the mean paired difference and its "
    f"{CONFIDENCE:.0%} Student's t interval. It holds when the interval lies above 0, does not hold below 0, "
    "and is equivalent when the difference is shown to be smaller than the smallest effect that matters "
    "(min_effect: the 90% interval lies inside ± min_effect, two one-sided tests at 5%); otherwise it is "
    "inconclusive. One seed decides nothing. The Holm column decides the table's claims as one family "
    "(family-wise error 5%). Seeds needed: the paired seeds that give 80% power to decide an effect of the "
    "observed size, and of min_effect, at the observed paired sd (noncentral t).")
