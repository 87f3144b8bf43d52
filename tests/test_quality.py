"""Quality of a transfer set (dfkd.stages.quality, dfkd.analysis.rank, `dfkd score`, `dfkd quality`):
scores against hand-computed values, distances against brute force, rank correlations
against scipy.stats, and one-line errors on bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import cdist, pdist

from dfkd.stages import neighbours
from dfkd.stages import quality as q
from dfkd.stages import score, set_scores
from dfkd.analysis import rank
from dfkd.io.artifacts import write_h5, write_parquet
from dfkd.cli import main
from dfkd.errors import DfkdError
from dfkd.stages.hausdorff import hausdorff
from dfkd.stages.labels import teacher_labels


def write_source(folder, name, logits, features=None):
    """labels/{name}.parquet and features/{name}.h5 of a source, as `dfkd label` makes them."""
    logits = np.asarray(logits, np.float32)
    frame = teacher_labels(logits)
    frame.insert(0, "index", np.arange(len(logits), dtype=np.int64))
    frame["true_label"] = -1
    (folder / "labels").mkdir(exist_ok=True)
    (folder / "features").mkdir(exist_ok=True)
    labels_path, features_path = folder / "labels" / f"{name}.parquet", folder / "features" / f"{name}.h5"
    write_parquet(labels_path, frame, None)
    if features is None:
        features = np.zeros((len(logits), 2), np.float32)
    write_h5(features_path, {"features": np.asarray(features, np.float32), "logits": logits}, None)
    return labels_path, features_path


def one_hot_logits(labels, num_classes, scale=20.0):
    return scale * np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]


# ---------------------------------------------------------------------------- data-free scores
def test_effective_classes_uniform_single_and_by_hand():
    assert set_scores.effective_classes(np.repeat(np.arange(10), 7), 10) == pytest.approx(10)
    assert set_scores.effective_classes(np.full(50, 3), 10) == pytest.approx(1)
    # counts (2, 1, 1): p = (1/2, 1/4, 1/4), H = 1.5 ln 2, exp(H) = 2^1.5
    assert set_scores.effective_classes(np.array([0, 0, 1, 2]), 4) == pytest.approx(2**1.5)


def test_fill_by_hand():
    label = np.array([0] * 5 + [1])  # counts (5, 1, 0), cap 3: (3 + 1 + 0) / (3 * 3)
    assert set_scores.fill(label, 3, 3) == pytest.approx(4 / 9)
    assert set_scores.fill(np.repeat(np.arange(3), 4), 3, 4) == 1.0


def test_soft_effective_classes_by_hand():
    assert set_scores.soft_effective_classes(np.zeros((5, 4))) == pytest.approx(4)  # every row uniform
    assert set_scores.soft_effective_classes(one_hot_logits([2, 2, 2], 4, 60.0)) == pytest.approx(1)
    # Rows uniform over 2 classes and one-hot on class 0: mean prior (3/4, 1/4).
    logits = np.array([[0.0, 0.0], [80.0, 0.0]])
    p = np.array([0.75, 0.25])
    assert set_scores.soft_effective_classes(logits) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_feature_spreads_by_hand_and_brute_force():
    features = np.array([[0, 0], [2, 0], [0, 0], [0, 4], [0, 8], [9, 9]], float)
    label = np.array([0, 0, 1, 1, 1, 2])  # class 2 has one row: left out
    # class 0: var (1, 0) -> 1; class 1: var of (0, 4, 8) = 32/3 -> sqrt(32/3)
    assert set_scores.within_class_spread(features, label, 3) == pytest.approx((1 + math.sqrt(32 / 3)) / 2)
    assert math.isnan(set_scores.within_class_spread(features[:1], label[:1], 3))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5))
    assert set_scores.feature_spread(x) == pytest.approx(math.sqrt(np.mean(pdist(x) ** 2)), rel=1e-12)
    assert math.isnan(set_scores.feature_spread(x[:1]))


def test_scores_of_constructed_files(tmp_path):
    """Every score of a source, read from its labels and features files, by hand."""
    logits = np.array([[2, 0, 0], [1, 0, 0], [3, 1, 0], [0, 1, 0]], np.float32)
    features = np.array([[0, 0], [2, 0], [4, 0], [5, 5]], np.float32)
    labels_path, features_path = write_source(tmp_path, "a", logits, features)
    out = tmp_path / "s.json"
    payload = score.score_files([labels_path], 3, out, [features_path], per_class=2)
    source = next(c for c in payload["candidates"] if c["name"] == "a")
    scores = source["scores"]
    probs = np.exp(logits - logits.max(1, keepdims=True))  # teacher classes: 0, 0, 0, 1
    probs /= probs.sum(1, keepdims=True)
    top = np.sort(probs, axis=1)
    p = np.array([3 / 4, 1 / 4])
    prior = probs.mean(0)
    assert scores["effective_classes"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert scores["fill"] == pytest.approx((2 + 1 + 0) / 6)
    assert scores["mean_confidence"] == pytest.approx(top[:, -1].mean(), rel=1e-6)
    assert scores["mean_margin"] == pytest.approx((top[:, -1] - top[:, -2]).mean(), rel=1e-6)
    assert scores["soft_effective_classes"] == pytest.approx(math.exp(-(prior * np.log(prior)).sum()), rel=1e-6)
    assert scores["within_class_spread"] == pytest.approx(math.sqrt(8 / 3))  # class 0: x = 0, 2, 4
    assert scores["feature_spread"] == pytest.approx(math.sqrt(np.mean(pdist(features.astype(float)) ** 2)))
    assert source["n"] == 4
    assert json.loads(out.read_text())["provenance"]["stage"] == "score"


def test_score_ranks_sources_and_their_balanced_mix(tmp_path, capsys):
    a = write_source(tmp_path, "a", one_hot_logits([0] * 6 + [1] * 2, 3))  # classes 0, 1
    b = write_source(tmp_path, "b", one_hot_logits([2] * 4 + [1] * 3, 3))  # classes 1, 2
    out = tmp_path / "s.json"
    code = main(["score", "--labels", str(a[0]), str(b[0]), "--num-classes", "3", "--per-class", "3",
                 "--out", str(out), "--features", str(a[1]), str(b[1])])
    assert code == 0
    payload = json.loads(out.read_text())
    names = [c["name"] for c in payload["candidates"]]
    assert names[0] == "mix:a+b"  # fills every class: 3 + 3 + 3
    mix = payload["candidates"][0]
    assert mix["n"] == 9 and mix["scores"]["fill"] == 1.0 and mix["short_classes"] == 0
    assert mix["scores"]["effective_classes"] == pytest.approx(3)
    by_name = {c["name"]: c for c in payload["candidates"]}
    assert by_name["a"]["scores"]["fill"] == pytest.approx((3 + 2) / 9)
    assert by_name["b"]["scores"]["fill"] == pytest.approx((3 + 3) / 9)
    assert payload["ranking"]["fill"] == ["mix:a+b", "b", "a"]
    assert payload["rank_by"] == "fill" and payload["per_class"] == 3
    printed = capsys.readouterr().out
    assert "mix:a+b" in printed and "effective_classes" in printed


def test_score_without_features_uses_labels_only(tmp_path):
    a = write_source(tmp_path, "a", one_hot_logits([0, 1, 1, 1], 2))
    payload = score.score_sources([a[0]], 2)
    assert payload["per_class"] == 2  # 4 rows // 2 classes, assemble's default
    assert set(payload["candidates"][0]["scores"]) == {"effective_classes", "fill", "mean_confidence", "mean_margin"}


# ---------------------------------------------------------------------------- bad input
def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_score_rejects_an_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.parquet"
    frame = pd.DataFrame({c: np.zeros(0, t) for c, t in
                          [("index", np.int64), ("label", np.int64), ("confidence", np.float32),
                           ("margin", np.float32), ("true_label", np.int64)]})
    write_parquet(path, frame, None)
    code, err = run_cli(["score", "--labels", str(path), "--num-classes", "3", "--out", str(tmp_path / "s.json")], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert str(path) in err and "no rows" in err
    assert not (tmp_path / "s.json").exists()


def test_score_rejects_a_wrong_class_count(tmp_path, capsys):
    a = write_source(tmp_path, "a", one_hot_logits([0, 4, 2], 5))
    code, err = run_cli(["score", "--labels", str(a[0]), "--num-classes", "3", "--out", str(tmp_path / "s.json")], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert str(a[0]) in err and "class 4" in err and "--num-classes is 3" in err


def test_score_rejects_features_of_another_size(tmp_path, capsys):
    a = write_source(tmp_path, "a", one_hot_logits([0, 1, 2], 3))
    other = write_source(tmp_path, "other", one_hot_logits([0, 1], 3))
    code, err = run_cli(["score", "--labels", str(a[0]), "--num-classes", "3", "--out", str(tmp_path / "s.json"),
                         "--features", str(other[1])], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert str(other[1]) in err and str(a[0]) in err and "2 rows" in err


def test_score_rejects_a_features_count_mismatch(tmp_path, capsys):
    a = write_source(tmp_path, "a", one_hot_logits([0, 1, 2], 3))
    b = write_source(tmp_path, "b", one_hot_logits([0, 1, 2], 3))
    code, err = run_cli(["score", "--labels", str(a[0]), str(b[0]), "--num-classes", "3",
                         "--out", str(tmp_path / "s.json"), "--features", str(a[1])], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "1 features files for 2 labels files" in err and str(a[1]) in err


def test_score_rejects_logits_of_another_class_count(tmp_path, capsys):
    a = write_source(tmp_path, "a", one_hot_logits([0, 1, 2], 3))
    wide = write_source(tmp_path, "wide", one_hot_logits([0, 1, 2], 4))
    code, err = run_cli(["score", "--labels", str(a[0]), "--num-classes", "3", "--out", str(tmp_path / "s.json"),
                         "--features", str(wide[1])], capsys)
    assert code == 2 and str(wide[1]) in err and "4 classes" in err


# ---------------------------------------------------------------------------- distances
def brute_nn(a, b):
    return cdist(np.asarray(a, np.float64), np.asarray(b, np.float64)).min(axis=1)


@pytest.mark.parametrize("dim", [1, 6, 40])
def test_nearest_distances_match_brute_force(dim):
    rng = np.random.default_rng(dim)
    a = rng.standard_normal((260, dim)).astype(np.float32)
    b = (rng.standard_normal((330, dim)) + 0.4).astype(np.float32)
    b[:50] = a[:50]  # exact duplicates: distance 0
    assert np.allclose(neighbours.nearest_distances(a, b), brute_nn(a, b), rtol=1e-12, atol=0)
    assert np.allclose(neighbours.nearest_distances(b, a), brute_nn(b, a), rtol=1e-12, atol=0)
    assert (neighbours.nearest_distances(a, b)[:50] == 0).all()


@pytest.mark.parametrize("k", [1, 5])
def test_kth_neighbour_distances_match_brute_force(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((300, 8)) * 50 + 1000  # large offset: centring matters
    x[10] = x[11]  # a duplicate counts as a neighbour at distance 0
    full = cdist(x, x)
    np.fill_diagonal(full, np.inf)
    want = np.sort(full, axis=1)[:, k - 1]
    assert np.allclose(neighbours.kth_neighbour_distances(x, k), want, rtol=1e-12, atol=1e-12)
    small = x[:9]  # every other row a candidate (no certification needed)
    f = cdist(small, small)
    np.fill_diagonal(f, np.inf)
    assert np.allclose(neighbours.kth_neighbour_distances(small, k), np.sort(f, axis=1)[:, k - 1], rtol=1e-12)
    with pytest.raises(DfkdError, match="k-th neighbour"):
        neighbours.kth_neighbour_distances(small, 9)


def test_kth_neighbour_distances_on_a_lattice_of_ties(monkeypatch):
    """Many equal distances: where the ties run past the candidates, certification fails and
    the row is measured against every row (here: 7th neighbour of an inner point of a cubic
    lattice, at sqrt 2 like its 7th..18th, beyond the 15 candidates)."""
    grid = np.stack(np.meshgrid(*[np.arange(5.0)] * 3), -1).reshape(-1, 3)  # (125, 3)
    full = cdist(grid, grid)
    np.fill_diagonal(full, np.inf)
    measured = []
    original = neighbours.pair_distances
    monkeypatch.setattr(neighbours, "pair_distances", lambda x, y, r, c: measured.append(len(r)) or original(x, y, r, c))
    for k in (1, 7, 20):
        measured.clear()
        assert np.allclose(neighbours.kth_neighbour_distances(grid, k), np.sort(full, axis=1)[:, k - 1], rtol=1e-12)
        if k == 7:
            assert measured.count(len(grid)) >= 27  # the inner points at least


def test_training_distances_match_brute_force():
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((120, 5)) * 1.3 + 0.5).astype(np.float32)
    b = rng.standard_normal((200, 5)).astype(np.float32)
    distances, details = set_scores.training_distances(a, b, k=5, q=0.9)
    d = cdist(a.astype(np.float64), b.astype(np.float64))
    ab, ba = d.min(axis=1), d.min(axis=0)
    assert distances["hausdorff"] == pytest.approx(max(ab.max(), ba.max()), rel=1e-12)
    assert distances["hausdorff"] == pytest.approx(hausdorff(a, b)["hausdorff"], rel=1e-12)
    assert distances["average_hausdorff"] == pytest.approx((ab.mean() + ba.mean()) / 2, rel=1e-12)
    # 0.9-quantile as the ceil(0.9 n)-th smallest value
    assert details["partial_ab"] == np.sort(ab)[math.ceil(0.9 * 120) - 1]
    assert details["partial_ba"] == np.sort(ba)[math.ceil(0.9 * 200) - 1]
    assert distances["partial_hausdorff"] == max(details["partial_ab"], details["partial_ba"])
    # coverage (Naeem et al. 2020, their prdc code): k+1 smallest distances including self
    real = cdist(b.astype(np.float64), b.astype(np.float64))
    radius = np.sort(real, axis=1)[:, 5]
    assert distances["coverage"] == pytest.approx(np.mean(ba < radius))
    assert 0 < distances["coverage"] < 1
    assert details["n_train"] == 200 and details["dim"] == 5


def test_coverage_is_one_for_the_training_set_itself():
    b = np.random.default_rng(4).standard_normal((80, 3))
    distances, _ = set_scores.training_distances(b[:60], b, k=5)
    assert distances["coverage"] >= 60 / 80
    distances, _ = set_scores.training_distances(b, b, k=5)
    assert distances["coverage"] == 1.0 and distances["hausdorff"] == 0.0 and distances["frechet"] < 1e-9


def test_frechet_closed_forms():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((500, 1)) * 2 + 1, rng.standard_normal((400, 1)) * 0.5
    value, residual = set_scores.frechet(a, b)
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    assert value == pytest.approx((a.mean() - b.mean()) ** 2 + (sa - sb) ** 2, rel=1e-10)
    assert residual < 1e-12
    # D dims: tr sqrtm(Sa Sb) = sum of sqrt eigenvalues of Sa^(1/2) Sb Sa^(1/2) (symmetric PSD)
    a, b = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)), rng.standard_normal((250, 6)) + 0.3
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(ca)
    half = v @ np.diag(np.sqrt(w)) @ v.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(half @ cb @ half), 0, None)).sum()
    want = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * trace_root
    value, residual = set_scores.frechet(a, b)
    assert value == pytest.approx(want, rel=1e-9)
    assert residual < 1e-10


def test_quality_cli_writes_the_payload(tmp_path, capsys):
    rng = np.random.default_rng(6)
    a = write_source(tmp_path, "a", one_hot_logits([0, 0, 1, 1, 2, 0], 3), rng.standard_normal((6, 4)))
    b = write_source(tmp_path, "b", one_hot_logits([2, 2, 1], 3), rng.standard_normal((3, 4)) + 1)
    manifest = pd.DataFrame({"source": ["a", "a", "b", "a", "b"], "index": [0, 1, 2, 4, 0],
                             "label": [0, 0, 1, 2, 2], "confidence": np.ones(5, np.float32)})
    manifest_path = tmp_path / "transfer" / "mixab.parquet"
    manifest_path.parent.mkdir()
    write_parquet(manifest_path, manifest, None)
    train = rng.standard_normal((30, 4)).astype(np.float32)
    write_h5(tmp_path / "features" / "train.h5", {"features": train, "logits": np.zeros((30, 3), np.float32)}, None)
    out = tmp_path / "quality" / "mixab.json"
    code = main(["quality", "--manifest", str(manifest_path), "--labels", str(a[0]), str(b[0]),
                 "--features", str(a[1]), str(b[1]), "--num-classes", "3", "--per-class", "2",
                 "--train-features", str(tmp_path / "features" / "train.h5"), "--out", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    assert payload["set"] == "mixab" and payload["n"] == 5 and payload["sources"] == ["a", "b"]
    assert payload["class_counts"] == [2, 1, 2]  # the labels files' classes (b row 2 is class 1)
    assert payload["scores"]["fill"] == pytest.approx(5 / 6)
    feats = np.concatenate([rng_rows(a[1], [0, 1, 4]), rng_rows(b[1], [2, 0])])
    want = cdist(feats.astype(np.float64), train.astype(np.float64))
    assert payload["distances"]["hausdorff"] == pytest.approx(max(want.min(1).max(), want.min(0).max()), rel=1e-12)
    assert set(payload["distances"]) == {"hausdorff", "average_hausdorff", "partial_hausdorff", "frechet", "coverage"}
    assert payload["directions"]["hausdorff"] == -1 and payload["directions"]["fill"] == 1
    assert payload["provenance"]["stage"] == "quality"
    assert "fill" in capsys.readouterr().out
    # the workflow passes the same two numbers as --params (dfkd.slices.quality_slice)
    again = tmp_path / "quality" / "again.json"
    assert main(["quality", "--manifest", str(manifest_path), "--labels", str(a[0]), str(b[0]),
                 "--features", str(a[1]), str(b[1]), "--params", json.dumps({"num_classes": 3, "per_class": 2}),
                 "--train-features", str(tmp_path / "features" / "train.h5"), "--out", str(again)]) == 0
    assert json.loads(again.read_text())["scores"] == payload["scores"]
    assert main(["quality", "--manifest", str(manifest_path), "--labels", str(a[0]), "--features", str(a[1]),
                 "--out", str(again)]) == 2
    assert "give --num-classes and --per-class, or both as --params" in capsys.readouterr().err


def test_coverage_radii_are_computed_once_and_give_the_same_payload(tmp_path, capsys):
    """`dfkd coverage-radii` once per target, then `dfkd quality --train-radii`: the same distances
    as computing the radii in the quality job; radii of other features or another k are refused."""
    rng = np.random.default_rng(8)
    a = write_source(tmp_path, "a", one_hot_logits([0, 1, 2, 0, 1, 2, 0], 3), rng.standard_normal((7, 4)))
    manifest_path = tmp_path / "transfer" / "a" / "seed0.parquet"
    manifest_path.parent.mkdir(parents=True)
    write_parquet(manifest_path, pd.DataFrame({"source": ["a"] * 7, "index": np.arange(7),
                                               "label": [0, 1, 2, 0, 1, 2, 0]}), None)
    train_path, radii_path = tmp_path / "features" / "train.h5", tmp_path / "quality" / "coverage_radii.h5"
    train = rng.standard_normal((40, 4)).astype(np.float32)
    write_h5(train_path, {"features": train, "logits": np.zeros((40, 3), np.float32)}, None)
    assert main(["coverage-radii", "--train-features", str(train_path), "--out", str(radii_path)]) == 0
    from dfkd.io.artifacts import read_h5_array, read_h5_provenance

    brute = np.sort(cdist(train.astype(np.float64), train.astype(np.float64)), axis=1)[:, q.COVERAGE_K]
    np.testing.assert_allclose(read_h5_array(radii_path, "radii"), brute, rtol=1e-12)
    assert read_h5_provenance(radii_path)["stage"] == "coverage_radii"
    common = ["quality", "--manifest", str(manifest_path), "--labels", str(a[0]), "--features", str(a[1]),
              "--num-classes", "3", "--per-class", "3", "--train-features", str(train_path)]
    assert main([*common, "--out", str(tmp_path / "fresh.json")]) == 0
    assert main([*common, "--train-radii", str(radii_path), "--out", str(tmp_path / "cached.json")]) == 0
    fresh, cached = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("fresh", "cached"))
    assert cached["distances"] == fresh["distances"] and 0 < cached["distances"]["coverage"] < 1
    assert "train_radii" in cached["provenance"]["inputs"]

    write_h5(train_path, {"features": train + 1, "logits": np.zeros((40, 3), np.float32)}, None)  # features changed
    capsys.readouterr()
    assert main([*common, "--train-radii", str(radii_path), "--out", str(tmp_path / "stale.json")]) == 2
    err = capsys.readouterr().err
    assert "computed from other training features" in err and "coverage_radii" in err
    assert not (tmp_path / "stale.json").exists()
    with pytest.raises(DfkdError, match="radii for k=5; coverage needs k=3"):
        q.read_coverage_radii(radii_path, train_path, 3)
    with pytest.raises(DfkdError, match="--train-radii needs --train-features"):
        q.quality_files(manifest_path, [a[0]], [a[1]], 3, 3, tmp_path / "x.json", None, radii_path)


def rng_rows(path, rows):
    from dfkd.io.artifacts import read_h5_array

    return read_h5_array(path, "features")[rows]


def test_quality_of_a_manifest_row_missing_from_the_labels(tmp_path):
    a = write_source(tmp_path, "a", one_hot_logits([0, 1], 2))
    manifest_path = tmp_path / "m.parquet"
    write_parquet(manifest_path, pd.DataFrame({"source": ["a"], "index": [7], "label": [0],
                                               "confidence": [1.0]}), None)
    with pytest.raises(DfkdError, match="row 7 of source 'a'"):
        q.quality_of_set(manifest_path, [a[0]], [a[1]], 2, 1)


# ---------------------------------------------------------------------------- rank correlations
def test_rank_correlation_matches_scipy_with_ties():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 5, 15).astype(float)  # ties
    y = x + rng.standard_normal(15)
    result = rank.rank_correlation(x, y, resamples=300, seed=1)
    assert result["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert result["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    # The bootstrap interval from the same resamples, scipy per resample, constant ones left out.
    pick = np.random.default_rng(1).integers(0, 15, size=(300, 15))
    rho, tau = [], []
    for p in pick:
        if np.ptp(x[p]) > 0 and np.ptp(y[p]) > 0:
            rho.append(stats.spearmanr(x[p], y[p]).statistic)
            tau.append(stats.kendalltau(x[p], y[p]).statistic)
    assert result["valid_resamples"] == len(rho)
    assert result["spearman_ci"] == pytest.approx(list(np.percentile(rho, [2.5, 97.5])), abs=1e-12)
    assert result["kendall_ci"] == pytest.approx(list(np.percentile(tau, [2.5, 97.5])), abs=1e-12)
    assert result == rank.rank_correlation(x, y, resamples=300, seed=1)  # seeded: repeats exactly


def test_rank_correlation_is_nan_safe():
    result = rank.rank_correlation([1.0, 1.0, 1.0], [0.2, 0.5, 0.9], resamples=50)
    assert math.isnan(result["spearman"]) and math.isnan(result["kendall"]) and result["valid_resamples"] == 0
    assert all(math.isnan(v) for v in result["spearman_ci"])
    result = rank.rank_correlation([1.0, np.nan, 3.0, 2.0], [0.1, 0.5, 0.3, 0.2], resamples=50)
    assert result["n"] == 3 and result["spearman"] == pytest.approx(1.0)
    assert rank.rank_correlation([1.0], [2.0])["n"] == 1


def test_verdict_counts_each_metric_in_its_expected_direction():
    accuracy = np.array([0.2, 0.4, 0.5, 0.7, 0.9])
    values = {
        "fill": np.array([0.3, 0.5, 0.4, 0.8, 0.9]),  # rho 0.9
        "effective_classes": -accuracy,  # perfectly backwards: does not count as good
        "hausdorff": -accuracy,  # smaller distance, better student: directed rho 1
    }
    result = rank.verdict(values, accuracy, resamples=200)
    assert result["holds"] is False and result["best"] == "fill"
    assert result["best_rho"] == pytest.approx(0.9) and result["reference_rho"] == pytest.approx(1.0)
    assert result["difference"] == pytest.approx(-0.1)
    assert result["directed_spearman"]["effective_classes"] == pytest.approx(-1.0)
    lo, hi = result["difference_ci"]
    assert lo <= hi <= 0.0 + 1e-12
    values["hausdorff"] = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    result = rank.verdict(values, accuracy, resamples=200)
    assert result["holds"] is True and result["best"] == "fill"
    assert result["statement"] == rank.STATEMENT


def test_verdict_label_is_decided_by_the_interval():
    assert [rank.verdict_label(*ci) for ci in ([0.0, 0.3], [0.1, 0.4], [-0.4, -0.1], [-0.41, 0.12])] == [
        "holds", "holds", "does not hold", "inconclusive"]
    assert rank.verdict_label(float("nan"), float("nan")) == "not measured"
    accuracy = np.arange(12, dtype=float)
    shuffled = np.r_[accuracy[6:], accuracy[:6]]  # a distance that ranks the sets poorly
    clear = rank.verdict({"fill": accuracy, "hausdorff": shuffled}, accuracy, resamples=300)
    assert clear["holds"] is True and clear["label"] == "holds"  # fill ranks perfectly, Hausdorff poorly
    rng = np.random.default_rng(0)
    noisy = rank.verdict({"fill": accuracy + rng.normal(0, 3, 12), "hausdorff": -accuracy + rng.normal(0, 3, 12)},
                         accuracy, resamples=300)
    low, high = noisy["difference_ci"]
    assert low < 0 < high and noisy["label"] == "inconclusive"


def test_verdict_without_a_reference_is_undecided():
    result = rank.verdict({"fill": [1.0, 2.0, 3.0]}, [0.1, 0.2, 0.3], resamples=10)
    assert result["holds"] is None and math.isnan(result["reference_rho"]) and result["label"] == "not measured"
