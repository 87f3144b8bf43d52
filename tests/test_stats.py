"""Replicate statistics against hand-computed values, and verdicts on constructed cases."""
from __future__ import annotations

import math

import pytest

from dfkd.stats import (
    DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_MEASURED, SINGLE_SEED, paired_claim, summarize, t_interval,
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


def test_record_shape():
    record = paired_claim("A > B", {0: 1.0}, {0: 0.0}).as_record()
    assert set(record) == {"claim", "difference_mean", "ci_low", "ci_high", "n", "verdict"}
    assert record["ci_low"] is None and record["verdict"] == SINGLE_SEED
