"""Exact Hausdorff distance (dfkd.stages.hausdorff) against a brute-force float64 reference."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

import dfkd.stages.hausdorff as hd
import dfkd.stages.neighbours as neighbours
from dfkd.io.artifacts import write_h5, write_parquet
from dfkd.errors import DfkdError
from dfkd.stages.hausdorff import directed_hausdorff_exact, gather_features, hausdorff, hausdorff_files


def reference(a: np.ndarray, b: np.ndarray) -> float:
    """h(A, B) by brute force in float64 (scipy computes each distance directly)."""
    return float(cdist(np.asarray(a, np.float64), np.asarray(b, np.float64)).min(axis=1).max())


def assert_exact(a, b, **kwargs) -> tuple[float, int, int]:
    h, i, j = directed_hausdorff_exact(a, b, **kwargs)
    want = reference(a, b)
    assert h == pytest.approx(want, rel=1e-9, abs=1e-300)
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.linalg.norm(a64[i] - b64[j]) == pytest.approx(h, rel=1e-12, abs=1e-300)  # the pair attains it
    return h, i, j


def far_apart_near_duplicates(rng, n: int, dim: int, scale: float, offset: float):
    """Large-norm points (which centring cannot shrink) and copies moved by ~offset."""
    centres = rng.choice([-scale, scale], size=(n, dim)) + rng.standard_normal((n, dim))
    a = centres + offset * rng.standard_normal((n, dim))
    b = centres + offset * rng.standard_normal((n, dim))
    return a, b


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("dim", [1, 3, 84])
def test_random_sets_match_the_reference(dim):
    rng = np.random.default_rng(dim)
    a = rng.standard_normal((700, dim)).astype(np.float32)
    b = (rng.standard_normal((300, dim)) + 0.5).astype(np.float32)
    for block in (7, 64, 4096):
        assert_exact(a, b, block=block)
        assert_exact(b, a, block=block)


def test_subset_has_zero_distance_one_way():
    rng = np.random.default_rng(1)
    a = np.maximum(rng.standard_normal((900, 20)), 0)
    b = a[rng.choice(900, 250, replace=False)]
    result = hausdorff(a, b, block=32)
    assert result["directed_ba"] == 0.0
    assert result["directed_ab"] == pytest.approx(reference(a, b), rel=1e-9)
    assert result["hausdorff"] == result["directed_ab"]
    i, j = result["pair_ba"]
    assert np.array_equal(b[i], a[j])


def test_near_duplicates_where_float32_expansion_errs():
    rng = np.random.default_rng(2)
    a, b = far_apart_near_duplicates(rng, 400, 16, scale=1e4, offset=1e-4)
    # The float32 expansion |a|^2 - 2ab + |b|^2 alone gets these distances badly wrong...
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    d2 = (a32**2).sum(1)[:, None] - 2 * a32 @ b32.T + (b32**2).sum(1)[None, :]
    naive = float(np.sqrt(np.maximum(d2, 0).min(axis=1).max()))
    assert abs(naive - reference(a, b)) > 1e-2 * reference(a, b)
    # ...the exact search does not, whatever the block size.
    for block in (16, 2048):
        assert_exact(a, b, block=block)
        assert_exact(b, a, block=block)


def test_close_competitors_are_told_apart():
    # Every row of A has two candidates in B at distances differing by ~1e-9 relative.
    rng = np.random.default_rng(3)
    base = rng.choice([-1e3, 1e3], size=(200, 8))
    a = base
    step = rng.standard_normal((200, 8))
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    b = np.concatenate([base + step * 0.5, base - step * 0.5 * (1 + 1e-9)])
    assert_exact(a, b, block=50)


def test_ties_and_duplicates():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 3, size=(500, 4)).astype(np.float64)  # many equal rows and distances
    b = rng.integers(0, 3, size=(300, 4)).astype(np.float64) + 0.5
    assert_exact(a, b, block=16)
    assert_exact(b, a, block=16)
    same = np.ones((50, 3))
    assert hausdorff(same, same[:5])["hausdorff"] == 0.0


def test_single_rows():
    a = np.array([[0.0, 3.0]])
    b = np.array([[4.0, 0.0]])
    assert directed_hausdorff_exact(a, b) == (5.0, 0, 0)
    many = np.array([[4.0, 0.0], [0.0, 0.0], [9.0, 9.0]])
    assert directed_hausdorff_exact(a, many) == (3.0, 0, 1)
    h, i, j = directed_hausdorff_exact(many, a)
    assert h == pytest.approx(reference(many, a)) and (i, j) == (2, 0)


def test_every_stage_of_the_search(monkeypatch):
    # Small seed, sample and row blocks so that a modest set runs through every stage.
    monkeypatch.setattr(hd, "TOP_ROWS", 8)
    monkeypatch.setattr(hd, "SAMPLE_COLUMNS", 5)
    monkeypatch.setattr(hd, "ROW_BLOCK", 16)
    monkeypatch.setattr(neighbours, "ROW_BLOCK", 16)
    monkeypatch.setattr(neighbours, "PROBE_CHUNK", 33)
    rng = np.random.default_rng(5)
    a = np.maximum(rng.standard_normal((600, 12)) @ rng.standard_normal((12, 12)), 0)
    b = np.maximum(rng.standard_normal((400, 12)) + 1.0, 0)
    near = a[:300] + 1e-6 * rng.standard_normal((300, 12))
    for x, y in ((a, b), (b, a), (a, near), (near, a)):
        assert_exact(x, y, block=40)


def test_the_seed_changes_the_work_not_the_distance():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((400, 5)), rng.standard_normal((500, 5))
    first = hausdorff(a, b, seed=0)
    assert hausdorff(a, b, seed=0) == first
    other = hausdorff(a, b, seed=9)
    assert other["directed_ab"] == first["directed_ab"] and other["directed_ba"] == first["directed_ba"]


def test_threads_are_set_meanwhile_and_restored():
    import torch

    rng = np.random.default_rng(10)
    a, b = rng.standard_normal((300, 4)), rng.standard_normal((200, 4))
    before = torch.get_num_threads()
    assert hausdorff(a, b, threads=1) == hausdorff(a, b)
    assert torch.get_num_threads() == before


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40), st.integers(1, 40), st.integers(1, 6), st.integers(1, 9),
    st.sampled_from([1.0, 1e-3, 1e4, 1e-22]), st.integers(0, 2**16),  # 1e-22: float32 squares underflow
)
def test_property_matches_the_reference(n_a, n_b, dim, block, scale, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-2, 3, size=(n_a, dim)) * scale + scale * 1e-7 * rng.integers(0, 2, size=(n_a, dim))
    b = rng.integers(-2, 3, size=(n_b, dim)) * scale
    assert_exact(a, b, block=block)
    assert_exact(b, a, block=block)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "a, b, message",
    [
        (np.zeros((3, 4)), np.zeros((2, 5)), "different dimensions"),
        (np.zeros((0, 4)), np.zeros((2, 4)), "empty"),
        (np.zeros(4), np.zeros((2, 4)), "2-D"),
        (np.array([[np.nan, 1.0]]), np.zeros((2, 2)), "NaN"),
    ],
)
def test_bad_inputs(a, b, message):
    with pytest.raises(DfkdError, match=message):
        hausdorff(a, b)


# ---------------------------------------------------------------------------- files
def features_file(path, features):
    write_h5(path, {"features": np.asarray(features, np.float32)}, None)
    return path


def test_files_with_row_selections(tmp_path):
    rng = np.random.default_rng(7)
    train = rng.standard_normal((120, 6)).astype(np.float32)
    source = rng.standard_normal((80, 6)).astype(np.float32)
    a_h5, b_h5 = features_file(tmp_path / "train.h5", train), features_file(tmp_path / "noise.h5", source)
    rows_b = tmp_path / "set.parquet"
    picked = np.array([50, 3, 77, 10, 11])
    write_parquet(rows_b, pd.DataFrame({"source": "noise", "index": picked, "label": 0, "confidence": 1.0}), None)
    out = tmp_path / "distance" / "set.json"
    result = hausdorff_files(a_h5, b_h5, out, rows_b=rows_b)
    a64, b64 = train.astype(np.float64), source[picked].astype(np.float64)
    assert result["directed_ab"] == pytest.approx(reference(a64, b64), rel=1e-9)
    assert result["directed_ba"] == pytest.approx(reference(b64, a64), rel=1e-9)
    assert (result["n_a"], result["n_b"], result["dim"]) == (120, 5, 6)
    i, j = result["pair_ab"]  # rows of the files
    assert j in picked
    assert np.linalg.norm(train[i].astype(np.float64) - source[j]) == pytest.approx(result["directed_ab"])
    written = json.loads(out.read_text())
    assert written["hausdorff"] == result["hausdorff"]
    assert set(written["provenance"]["inputs"]) == {"features_a", "features_b", "rows_b"}


def test_files_errors(tmp_path):
    a_h5 = features_file(tmp_path / "a.h5", np.zeros((4, 3)))
    b_h5 = features_file(tmp_path / "b.h5", np.zeros((4, 2)))
    with pytest.raises(DfkdError, match="same teacher layer"):
        hausdorff_files(a_h5, b_h5, tmp_path / "o.json")
    mixed = tmp_path / "mixed.parquet"
    write_parquet(mixed, pd.DataFrame({"source": ["x", "y"], "index": [0, 1]}), None)
    with pytest.raises(DfkdError, match="several sources"):
        hausdorff_files(a_h5, a_h5, tmp_path / "o.json", rows_a=mixed)
    beyond = tmp_path / "beyond.parquet"
    write_parquet(beyond, pd.DataFrame({"index": [0, 9]}), None)
    with pytest.raises(DfkdError, match="asks for row 9"):
        hausdorff_files(a_h5, a_h5, tmp_path / "o.json", rows_b=beyond)
    empty = tmp_path / "empty.parquet"
    write_parquet(empty, pd.DataFrame({"index": np.zeros(0, np.int64)}), None)
    with pytest.raises(DfkdError, match="picks no rows"):
        hausdorff_files(a_h5, a_h5, tmp_path / "o.json", rows_a=empty)


def test_gather_features_over_two_sources(tmp_path, monkeypatch):
    monkeypatch.setattr("dfkd.io.rows.BLOCK", 7)  # several blocks per file
    rng = np.random.default_rng(8)
    noise, shapes = rng.standard_normal((30, 4)), rng.standard_normal((20, 4))
    files = {
        "noise": features_file(tmp_path / "noise.h5", noise),
        "shapes": features_file(tmp_path / "shapes.h5", shapes),
    }
    manifest = pd.DataFrame({"source": ["shapes", "noise", "noise", "shapes", "noise"], "index": [19, 0, 29, 3, 8]})
    gathered = gather_features(manifest, files)
    expected = np.stack([shapes[19], noise[0], noise[29], shapes[3], noise[8]]).astype(np.float32)
    assert gathered.dtype == np.float32 and np.array_equal(gathered, expected)
    with pytest.raises(DfkdError, match="no features file"):
        gather_features(manifest, {"noise": files["noise"]})
    files["shapes"] = features_file(tmp_path / "wide.h5", np.zeros((20, 5)))
    with pytest.raises(DfkdError, match="differ in dimension"):
        gather_features(manifest, files)
