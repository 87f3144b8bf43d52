"""`dfkd claim`: a claim between two runs (or a run and a number) decided from paired seeds."""
from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from dfkd.io import layout
from dfkd.io.artifacts import write_json
from dfkd.analysis.claims import decide, seeds_of
from dfkd.cli import main
from dfkd.errors import DfkdError
from dfkd.analysis.replicates import ReplicateReader


def write_runs(target_dir, runs):
    """runs: {run: {seed: accuracy in [0, 1]}} as dfkd distill's metrics.json files."""
    for run, values in runs.items():
        for seed, accuracy in values.items():
            path = target_dir / layout.student_metrics(run, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"test_accuracy": accuracy}, None)


def test_a_paired_win_by_hand(tmp_path):
    write_runs(tmp_path, {"a.strong": {0: 0.81, 1: 0.82, 2: 0.80}, "a": {0: 0.75, 1: 0.77, 2: 0.74, 3: 0.70}})
    decision = decide(tmp_path, "a.strong", "a")
    claim = decision["claim"]
    differences = [6.0, 5.0, 6.0]  # seed 3 has no partner: left out
    half = stats.t.ppf(0.975, 2) * stats.tstd(differences) / math.sqrt(3)
    assert claim.n == 3 and claim.difference_mean == pytest.approx(17 / 3)
    assert (claim.ci_low, claim.ci_high) == pytest.approx((17 / 3 - half, 17 / 3 + half))
    assert claim.verdict == "holds" and claim.claim == "a.strong beats a"
    assert seeds_of(tmp_path, "a") == [0, 1, 2, 3]


def test_against_a_published_number_and_the_other_verdicts(tmp_path, capsys):
    write_runs(tmp_path, {"x": {0: 0.8010, 1: 0.8020, 2: 0.8030}, "y": {0: 0.70, 1: 0.90, 2: 0.80}, "z": {5: 0.5}})
    assert decide(tmp_path, "x", 79.62)["claim"].verdict == "holds"
    assert decide(tmp_path, "x", 81.0)["claim"].verdict == "does not hold"
    assert decide(tmp_path, "y", "x")["claim"].verdict == "inconclusive"
    assert decide(tmp_path, "z", 40.0)["claim"].verdict == "single seed"
    assert main(["claim", str(tmp_path), "--better", "x", "--than-value", "79.62", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["claim"]["verdict"] == "holds" and record["claim"]["n"] == 3
    assert record["than"]["value"] == 79.62
    assert main(["claim", str(tmp_path), "--better", "y", "--than", "x", "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "seeds [0, 1]" in out and "n = 2 paired seeds" in out


def test_bad_input_is_one_line_naming_the_run(tmp_path, capsys):
    write_runs(tmp_path, {"x": {0: 0.8}})
    assert main(["claim", str(tmp_path), "--better", "nothing", "--than", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "run 'nothing'" in err and "students/nothing/seed{k}" in err and len(err.splitlines()) == 1
    with pytest.raises(DfkdError, match="no finished student for seed 4"):
        decide(tmp_path, "x", 70.0, seeds=[0, 4])
    (tmp_path / layout.student_metrics("x", 0)).write_text('{"loss": 1}')
    with pytest.raises(DfkdError, match="lacks test_accuracy and teacher_agreement"):
        decide(tmp_path, "x", 70.0)


def test_tables_and_claims_read_a_student_alike(tmp_path):
    """The study tables' reader and `dfkd claim` take the same number from a metrics.json; only
    the claim accepts a target without a test split (its teacher agreement)."""
    write_runs(tmp_path, {"a": {0: 0.8125}})
    assert ReplicateReader(tmp_path, [0]).accuracies("a", "default") == {0: 81.25} == decide(
        tmp_path, "a", 80.0)["better"]["seeds"]
    path = tmp_path / layout.student_metrics("b", 0)
    path.parent.mkdir(parents=True)
    write_json(path, {"teacher_agreement": 0.5}, None)
    assert decide(tmp_path, "b", 40.0)["better"]["seeds"] == {0: 50.0}
    with pytest.raises(DfkdError, match=r"lacks test_accuracy; it was not written by `dfkd distill`\.$"):
        ReplicateReader(tmp_path, [0]).accuracies("b", "default")


def test_several_claims_are_one_family_with_holm_and_seeds_needed(tmp_path, capsys):
    write_runs(tmp_path, {
        "a": {0: 0.810, 1: 0.812, 2: 0.809, 3: 0.811},
        "b": {0: 0.800, 1: 0.790, 2: 0.805, 3: 0.780},
        "c": {0: 0.8102, 1: 0.8118, 2: 0.8091, 3: 0.8109},
    })
    assert main(["claim", str(tmp_path), "a > b", "a>c", "b > 79.62", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)["claims"]
    assert [r["claim"]["claim"] for r in records] == ["a beats b", "a beats c", "b beats 79.62%"]
    assert {r["claim"]["family_size"] for r in records} == {3}
    by_hand = [stats.ttest_1samp([100 * (x - y) for x, y in zip(xs, ys)], 0.0).pvalue for xs, ys in (
        ([0.810, 0.812, 0.809, 0.811], [0.800, 0.790, 0.805, 0.780]),
        ([0.810, 0.812, 0.809, 0.811], [0.8102, 0.8118, 0.8091, 0.8109]))]
    assert records[0]["claim"]["p_value"] == pytest.approx(by_hand[0])
    # a and c differ by hundredths of a point: equivalent within the schema's 1 point
    assert records[1]["claim"]["verdict"] == "equivalent" and records[1]["claim"]["min_effect"] == 1.0
    assert records[1]["claim"]["holm_verdict"] == "equivalent"
    assert all("seeds_needed" in r["claim"] and "holm_verdict" in r["claim"] for r in records)
    assert main(["claim", str(tmp_path), "a > b", "b > 79.62", "--min-effect", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "| claim | n | difference | 95% CI | verdict | Holm (2 claims) |" in out
    assert "seeds would decide an effect of this size" in out


def test_a_malformed_claim_is_one_line(tmp_path, capsys):
    write_runs(tmp_path, {"x": {0: 0.8}})
    assert main(["claim", str(tmp_path), "x >> y"]) == 2
    err = capsys.readouterr().err.strip()
    assert "claim 'x >> y' is not 'RUN > RUN'" in err and len(err.splitlines()) == 1
    assert main(["claim", str(tmp_path)]) == 2
    assert "no claim given" in capsys.readouterr().err
    assert main(["claim", str(tmp_path), "--than", "x"]) == 2
    assert "need --better" in capsys.readouterr().err
