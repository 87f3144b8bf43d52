"""Replicate statistics against hand-computed values, and verdicts on constructed cases."""
from __future__ import annotations

import math

import pytest

from scipy import stats as scipy_stats

from dfkd.analysis.stats import (
    DOES_NOT_HOLD, EQUIVALENT, HOLDS, INCONCLUSIVE, MAX_SEEDS, NOT_MEASURED, SINGLE_SEED, claims_rows, holm,
    holm_adjusted, paired_claim, seeds_needed, summarize, t_interval, tost_p_value,
)


def test_summary_by_hand():
    s = summarize([70.0, 72.0, 77.0])
    assert s.n == 3
    assert s.mean == pytest.approx(73.0)
    # sample variance: (9 + 1 + 16) / 2 = 13
    assert s.sd == pytest.approx(math.sqrt(13.0))


def test_summary_of_one_and_none():
    one = summarize([5.0])
    assert (one.mean, one.n) == (5.0, 1) and math.isnan(one.sd)
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_t_interval_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.302652729911275
    mean, low, high, n = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert (mean, n) == (2.0, 3)
    assert low == pytest.approx(2 - half) and high == pytest.approx(2 + half)


def test_t_interval_two_values():
    # differences 4, 6: mean 5, sd sqrt(2), t_{0.975, 1} = 12.706204736174698
    mean, low, high, n = t_interval([4.0, 6.0])
    half = 12.706204736174698 * math.sqrt(2) / math.sqrt(2)
    assert mean == 5.0 and low == pytest.approx(5 - half) and high == pytest.approx(5 + half)


def test_clear_win():
    claim = paired_claim("A > B", {0: 80.0, 1: 81.0, 2: 80.5}, {0: 70.0, 1: 70.5, 2: 70.2})
    assert claim.verdict == HOLDS and claim.n == 3 and claim.ci_low > 0
    assert claim.difference_mean == pytest.approx((10.0 + 10.5 + 10.3) / 3)


def test_clear_loss():
    claim = paired_claim("A > B", {0: 60.0, 1: 61.0, 2: 60.5}, {0: 70.0, 1: 70.5, 2: 70.2})
    assert claim.verdict == DOES_NOT_HOLD and claim.ci_high < 0


def test_straddles_zero():
    claim = paired_claim("A > B", {0: 71.0, 1: 69.0, 2: 70.5}, {0: 70.0, 1: 70.0, 2: 70.0})
    assert claim.verdict == INCONCLUSIVE and claim.ci_low < 0 < claim.ci_high


def test_single_seed_never_holds():
    claim = paired_claim("A > B", {0: 90.0}, {0: 10.0})
    assert claim.verdict == SINGLE_SEED and claim.n == 1
    assert "holds" not in claim.line().split("**")[1]
    assert "n = 1" in claim.line()


def test_only_paired_seeds_count():
    # seed 1 only on one side, seed 3 only on the other: the pairs are seeds 0 and 2
    claim = paired_claim("A > B", {0: 80.0, 1: 0.0, 2: 82.0}, {0: 70.0, 2: 71.0, 3: 99.0})
    assert claim.n == 2 and claim.difference_mean == pytest.approx(10.5)
    assert paired_claim("A > B", {0: 1.0}, {1: 2.0}).verdict == NOT_MEASURED


RECORD_KEYS = {
    "claim", "difference_mean", "ci_low", "ci_high", "n", "verdict", "seeds", "differences", "difference_sd",
    "p_value", "min_effect", "equivalence_low", "equivalence_high", "p_equivalence", "seeds_needed",
    "seeds_needed_min_effect", "holm_verdict", "holm_p", "holm_p_equivalence", "family_size",
}


def test_record_shape():
    record = paired_claim("A > B", {0: 1.0}, {0: 0.0}).as_record()
    assert set(record) == RECORD_KEYS
    assert record["ci_low"] is None and record["verdict"] == SINGLE_SEED
    assert record["seeds"] == [0] and record["differences"] == [1.0]


def test_record_keeps_the_evidence_to_recompute_the_interval():
    record = paired_claim("A > B", {0: 80.0, 1: 81.5, 2: 79.0}, {0: 78.0, 1: 78.0, 2: 78.5}).as_record()
    assert record["seeds"] == [0, 1, 2] and record["differences"] == pytest.approx([2.0, 3.5, 0.5])
    result = scipy_stats.ttest_1samp(record["differences"], 0.0)
    low, high = result.confidence_interval(0.95)
    assert (record["ci_low"], record["ci_high"]) == pytest.approx((low, high))
    assert record["p_value"] == pytest.approx(result.pvalue)


def claim_of(differences, min_effect=None, name="A > B"):
    """A claim whose paired differences are exactly `differences` (the worse side is 0)."""
    return paired_claim(name, dict(enumerate(differences)), {i: 0.0 for i in range(len(differences))},
                        min_effect=min_effect)


@pytest.mark.parametrize("differences", [[1.2, -0.4, 2.5, 0.3], [4.0, 6.0], [0.1, 0.2, -0.05, 0.3, 0.0]])
def test_p_value_and_interval_match_scipy(differences):
    claim = claim_of(differences)
    result = scipy_stats.ttest_1samp(differences, 0.0)
    assert claim.p_value == pytest.approx(result.pvalue)
    assert (claim.ci_low, claim.ci_high) == pytest.approx(tuple(result.confidence_interval(0.95)))


def tost_by_hand(xs, band):
    """Two one-sided t tests written out: H0 mean <= -band and H0 mean >= +band; p is the larger."""
    n, mean, sd = len(xs), sum(xs) / len(xs), summarize(xs).sd
    se = sd / math.sqrt(n)
    p_lower = 1 - scipy_stats.t.cdf((mean + band) / se, n - 1)
    p_upper = scipy_stats.t.cdf((mean - band) / se, n - 1)
    return max(p_lower, p_upper)


@pytest.mark.parametrize("differences", [[0.2, -0.3, 0.1, 0.4, -0.1], [0.5, 0.9], [-0.8, 1.5, 0.3]])
def test_tost_matches_a_hand_computation_and_the_90_percent_interval(differences):
    claim = claim_of(differences, min_effect=1.0)
    p = tost_by_hand(differences, 1.0)
    assert claim.p_equivalence == pytest.approx(p)
    assert tost_p_value(claim.difference_mean, claim.difference_sd, claim.n, 1.0) == pytest.approx(p)
    # TOST at 5% decides as the 90% interval inside the band does
    inside = -1.0 < claim.equivalence_low and claim.equivalence_high < 1.0
    assert inside == (p < 0.05)
    assert (claim.verdict == EQUIVALENT) == (inside and claim.verdict not in (HOLDS, DOES_NOT_HOLD))


def test_a_small_precise_difference_is_equivalent():
    claim = claim_of([0.2, -0.1, 0.1, 0.0, 0.15, -0.05], min_effect=1.0)
    assert claim.verdict == EQUIVALENT
    assert "equivalent" in claim.line()
    # without a band there is no such verdict
    assert claim_of([0.2, -0.1, 0.1, 0.0, 0.15, -0.05]).verdict == INCONCLUSIVE


def test_a_band_exactly_touched_is_not_equivalent():
    differences = [-1.0, 1.0]  # mean 0, the 90% interval is symmetric about 0
    _, low, high, _ = t_interval(differences, 0.90)
    assert low == -high
    assert claim_of(differences, min_effect=high).verdict == INCONCLUSIVE  # touched: not inside
    assert claim_of(differences, min_effect=high * (1 + 1e-9)).verdict == EQUIVALENT


def test_two_seeds_decide_with_the_wide_t_of_one_degree_of_freedom():
    claim = claim_of([0.5, 0.7], min_effect=1.0)
    # t_{0.975, 1} = 12.71, t_{0.95, 1} = 6.31: neither interval is narrow enough here
    assert claim.n == 2 and claim.verdict == INCONCLUSIVE
    assert claim.equivalence_high == pytest.approx(0.6 + 6.313751514675043 * 0.1)


def test_zero_spread():
    exact = claim_of([0.3, 0.3, 0.3], min_effect=1.0)
    assert exact.ci_low == exact.ci_high == pytest.approx(0.3)
    assert exact.verdict == HOLDS and exact.p_value == 0.0
    assert "smaller than 1 points" in exact.line()  # real, and below the band
    nothing = claim_of([0.0, 0.0, 0.0], min_effect=1.0)
    assert nothing.verdict == EQUIVALENT and nothing.p_value == 1.0 and nothing.p_equivalence == 0.0
    assert seeds_needed(0.3, 0.0) == 2 and seeds_needed(0.0, 0.0) is None


def test_holm_adjusted_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 with m = 4: 0.04, max(0.04, 0.09), max(0.09, 0.08), max(0.09, 0.2)
    assert holm_adjusted([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    adjusted = holm_adjusted([0.5, math.nan, 0.001])  # NaN is not in the family: m = 2
    assert adjusted[0] == pytest.approx(0.5) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.002)
    assert holm_adjusted([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_holm_verdicts_over_a_family_by_hand():
    claims = [
        claim_of([3.0, 3.2, 2.9, 3.1, 3.05], name="strong"),       # p ~ 1e-7: survives
        claim_of([1.0, 0.2, 1.5, 0.4, 0.9], name="edge"),          # holds alone, p ~ 0.02
        claim_of([2.0, -1.0, 1.5, 0.5, -0.5], name="weak"),        # inconclusive alone
        claim_of([5.0], name="one seed"),                          # outside the family
    ]
    p = [scipy_stats.ttest_1samp(c.differences, 0.0).pvalue for c in claims[:3]]
    assert claims[1].verdict == HOLDS and 0.025 < p[1] < 0.05 and p[0] < 0.05 / 3
    decided = holm(claims)
    assert [c.family_size for c in decided] == [3, 3, 3, 3]
    # by hand: p sorted strong < edge < weak, levels 0.05/3, 0.05/2, 0.05; strong passes its
    # level, edge (p = 0.0255) misses 0.025, and the step-down stops there
    assert [c.holm_verdict for c in decided] == [HOLDS, INCONCLUSIVE, INCONCLUSIVE, SINGLE_SEED]
    assert decided[1].holm_p == pytest.approx(2 * p[1])
    assert decided[0].holm_p == pytest.approx(3 * p[0])
    # a family of one is the claim's own verdict
    assert holm([claims[1]])[0].holm_verdict == HOLDS


def test_holm_can_undo_a_holds():
    # six claims each at p ~ 0.03: each holds alone, none survives Holm (0.03 > 0.05 / 6)
    xs = [1.0, 0.2, 1.5, 0.4, 0.9]
    p = scipy_stats.ttest_1samp(xs, 0.0).pvalue
    assert 0.05 / 6 < p < 0.05
    decided = holm([claim_of(xs, name=f"c{i}") for i in range(6)])
    assert all(c.verdict == HOLDS and c.holm_verdict == INCONCLUSIVE for c in decided)
    assert "Holm over 6 claims: **inconclusive**" in decided[0].line()


def test_holm_equivalence_is_its_own_family():
    tight = [0.1, -0.1, 0.05, 0.0, -0.05, 0.1]
    decided = holm([claim_of(tight, 1.0, "tight"), claim_of([10.0, 11.0, 10.5], 1.0, "big")])
    assert [c.verdict for c in decided] == [EQUIVALENT, HOLDS]
    assert [c.holm_verdict for c in decided] == [EQUIVALENT, HOLDS]
    assert decided[0].holm_p_equivalence == pytest.approx(2 * decided[0].p_equivalence)


@pytest.mark.parametrize("d, n", [(0.5, 34), (0.8, 15), (1.0, 10)])
def test_seeds_needed_matches_the_textbook_power_of_a_one_sample_t_test(d, n):
    """Cohen's d = effect / sd, two-sided 5%, power 80%: the one-sample (paired) t test needs 34,
    15 and 10 (G*Power's exact noncentral-t values; the normal approximation says 32, 13, 8)."""
    assert seeds_needed(d * 2.0, 2.0) == n
    assert seeds_needed(-d * 2.0, 2.0) == n


def test_seeds_needed_edges():
    assert seeds_needed(48.0, 1.8) == 2          # a huge effect: the minimum for an interval
    assert seeds_needed(0.0, 1.0) is None        # no effect to detect
    assert seeds_needed(1.0, math.nan) is None   # no sd known (one seed)
    assert seeds_needed(0.001, 10.0) is None     # past MAX_SEEDS
    assert MAX_SEEDS >= 1000


def test_undecided_claims_say_how_many_seeds_would_decide_them():
    claim = claim_of([2.0, -1.0, 3.0], min_effect=1.0)
    assert claim.verdict == INCONCLUSIVE
    line = claim.line()
    assert f"about {claim.seeds_needed} seeds would decide an effect of this size (+1.33)" in line
    assert f"about {claim.seeds_needed_min_effect} seeds would decide one of 1 points, the smallest that matters" in line
    assert "seeds would decide" not in claim_of([3.0, 3.1, 2.9]).line()  # decided: no advice
    row = claims_rows(holm([claim]))[0]
    assert row["verdict"] == INCONCLUSIVE and row["seeds needed (this effect)"] == str(claim.seeds_needed)
    assert row["Holm (1 claims)"] == INCONCLUSIVE and row["95% CI"].startswith("[")
