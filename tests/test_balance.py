"""Algorithm 1 (dfkd.stages.balance): hand examples, determinism and a property test of its invariants."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfkd.io.artifacts import read_parquet, read_parquet_provenance, write_parquet
from dfkd.stages.balance import assemble, assemble_files
from dfkd.errors import DfkdError


def source(labels, index=None, confidence=None) -> pd.DataFrame:
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    return pd.DataFrame(
        {
            "index": np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64),
            "label": labels,
            "confidence": np.linspace(0.5, 1.0, n, dtype=np.float32) if confidence is None
            else np.asarray(confidence, dtype=np.float32),
        }
    )


def per_source_class(manifest: pd.DataFrame, name: str, num_classes: int) -> np.ndarray:
    return np.bincount(manifest.loc[manifest["source"] == name, "label"], minlength=num_classes)


# ---------------------------------------------------------------------------- hand examples
def test_paper_like_case_leaves_an_unfillable_class_short():
    # Class 2 is rare in the base and absent from the balancing source (FMNIST class 7 in Table 7).
    base = source([0] * 10 + [1] * 3 + [2] * 1)
    extra = source([0] * 5 + [1] * 5)
    manifest, counts = assemble([("base", base), ("extra", extra)], 3, total=15, per_class=5, seed=1)
    assert counts["before"].tolist() == [10, 3, 1]
    assert counts["target"].tolist() == [5, 5, 5]
    assert counts["after"].tolist() == [5, 5, 1]
    assert counts["from_base"].tolist() == [5, 3, 1]
    assert counts["from_extra"].tolist() == [0, 2, 0]
    assert counts["short"].tolist() == [False, False, True]
    assert len(manifest) == 11
    assert list(manifest.columns) == ["source", "index", "label", "confidence"]


def test_more_rows_than_needed_takes_exactly_the_cap_from_the_base():
    base = source(np.repeat(np.arange(4), 100))
    extra = source(np.repeat(np.arange(4), 100))
    manifest, counts = assemble([("base", base), ("extra", extra)], 4, total=40)
    assert counts["after"].tolist() == [10] * 4  # per_class defaults to total // K
    assert (manifest["source"] == "base").all()
    assert not counts["short"].any()


def test_per_class_is_capped_by_total_over_classes():
    base = source(np.repeat(np.arange(4), 100))
    _, counts = assemble([("base", base)], 4, total=20, per_class=50)
    assert counts["target"].tolist() == [5] * 4
    assert counts["after"].sum() == 20


def test_empty_sources_are_fine():
    empty = source([])
    manifest, counts = assemble([("a", empty), ("b", source([0, 1, 1])), ("c", empty)], 2, total=4)
    assert counts["after"].tolist() == [1, 2]
    assert counts["short"].tolist() == [True, False]
    assert set(manifest["source"]) == {"b"}
    manifest, counts = assemble([("a", empty)], 2, total=4)
    assert len(manifest) == 0 and counts["short"].all()
    manifest, counts = assemble([("a", empty)], 2, balanced=False, total=4)
    assert len(manifest) == 0 and not counts["short"].any()


def test_classes_keeps_only_the_first_k():
    base = source(np.repeat(np.arange(5), 10))
    manifest, counts = assemble([("base", base)], 5, total=50, per_class=10, classes=2)
    assert set(manifest["label"]) == {0, 1}
    assert counts["target"].tolist() == [10, 10, 0, 0, 0]
    assert counts["after"].tolist() == [10, 10, 0, 0, 0]
    assert not counts["short"].any()
    _, counts = assemble([("base", base)], 5, total=50, classes=2)  # per_class defaults to total // k
    assert counts["target"].tolist() == [25, 25, 0, 0, 0]
    assert counts["short"].tolist() == [True, True, False, False, False]


def test_size_splits_evenly_with_the_remainder_to_the_lowest_classes():
    base = source(np.repeat(np.arange(3), 20))
    manifest, counts = assemble([("base", base)], 3, total=60, per_class=20, size=8)
    assert counts["target"].tolist() == [3, 3, 2]
    assert counts["after"].tolist() == [3, 3, 2]
    _, counts = assemble([("base", base)], 3, size=5, classes=2)
    assert counts["after"].tolist() == [3, 2, 0]


def test_unbalanced_takes_the_base_only_up_to_total():
    base = source(np.repeat(np.arange(3), [50, 5, 0]))
    extra = source(np.repeat(np.arange(3), 30))
    manifest, counts = assemble([("base", base), ("extra", extra)], 3, balanced=False, total=20, seed=3)
    assert len(manifest) == 20 and (manifest["source"] == "base").all()
    assert counts["target"].tolist() == [-1, -1, -1] and not counts["short"].any()
    assert counts["from_extra"].tolist() == [0, 0, 0]
    manifest, _ = assemble([("base", base)], 3, balanced=False, total=100)
    assert len(manifest) == 55  # fewer rows than total: all of them
    manifest, _ = assemble([("base", base)], 3, balanced=False, total=100, classes=1, size=7)
    assert len(manifest) == 7 and (manifest["label"] == 0).all()


def test_prefer_confident_takes_the_most_confident_rows():
    base = source([0] * 6, confidence=[0.1, 0.9, 0.5, 0.95, 0.2, 0.3])
    manifest, _ = assemble([("base", base)], 1, total=3, prefer_confident=True)
    assert sorted(manifest["index"]) == [1, 2, 3]
    manifest, _ = assemble([("base", base)], 1, balanced=False, total=2, prefer_confident=True)
    assert sorted(manifest["index"]) == [1, 3]


def test_manifest_order_is_class_then_source_then_index():
    base = source([1, 0, 1, 0], index=[7, 5, 3, 9])
    extra = source([1, 1, 0], index=[4, 2, 8])
    manifest, _ = assemble([("base", base), ("extra", extra)], 2, total=6)
    assert list(zip(manifest["label"], manifest["source"], manifest["index"])) == [
        (0, "base", 5), (0, "base", 9), (0, "extra", 8),
        (1, "base", 3), (1, "base", 7), (1, "extra", 2),
    ]


# ---------------------------------------------------------------------------- determinism
def test_same_seed_same_manifest_different_seed_different_picks():
    rng = np.random.default_rng(0)
    base = source(rng.integers(0, 5, 2000), index=rng.permutation(2000))
    extra = source(rng.integers(0, 5, 2000))
    first, _ = assemble([("base", base), ("extra", extra)], 5, total=500, seed=7)
    again, _ = assemble([("base", base), ("extra", extra)], 5, total=500, seed=7)
    other, _ = assemble([("base", base), ("extra", extra)], 5, total=500, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert not first.duplicated(["source", "index"]).any()


def test_files_round_trip_is_byte_identical(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for name, n in (("patches", 300), ("digits", 200)):
        frame = source(rng.integers(0, 4, n))
        frame["margin"] = np.float32(0.1)
        frame["true_label"] = -1
        path = tmp_path / f"{name}.parquet"
        write_parquet(path, frame, None)
        paths.append(path)
    outs = []
    for run in range(2):
        out = tmp_path / f"set{run}.parquet"
        assemble_files(paths, 4, out, tmp_path / f"set{run}.counts.csv", total=200, per_class=60, seed=3)
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    manifest = read_parquet(outs[0], ["source", "index", "label", "confidence"])
    assert set(manifest["source"]) <= {"patches", "digits"}
    counts = pd.read_csv(tmp_path / "set0.counts.csv")
    assert list(counts.columns) == ["class", "before", "target", "after", "from_patches", "from_digits", "short"]
    assert counts["after"].sum() == len(manifest)
    provenance = read_parquet_provenance(outs[0])
    assert provenance["stage"] == "assemble" and provenance["seed"] == 3
    assert set(provenance["inputs"]) == {"labels/patches", "labels/digits"}
    assert provenance["config"]["sources"] == ["patches", "digits"]
    json.dumps(provenance)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "labels, kwargs, message",
    [
        ([("noise", source([0, 3]))], {}, "noise' hold class 3"),
        ([("noise", source([0, -1]))], {}, "class -1"),
        ([("noise", source([0, 1], index=[4, 4]))], {}, "index 4 more than once"),
        ([("noise", source([0, 1]))], {"per_class": -1}, "per_class must be >= 0"),
        ([("noise", source([0, 1]))], {"total": -5}, "total must be >= 0"),
        ([("noise", source([0, 1]))], {"size": -2}, "size must be >= 0"),
        ([("noise", source([0, 1]))], {"classes": 0}, "classes must be >= 1"),
        ([("noise", source([0, 1]))], {"classes": 4}, "exceeds"),
        ([("a", source([0])), ("a", source([1]))], {}, "distinct"),
        ([], {}, "at least one source"),
        ([("noise", source([0, 1]).drop(columns="confidence"))], {}, "lack columns"),
    ],
)
def test_bad_inputs_raise_dfkd_errors(labels, kwargs, message):
    with pytest.raises(DfkdError, match=message):
        assemble(labels, 3, **kwargs)


def test_duplicate_stems_raise(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DfkdError, match="share the source name"):
        assemble_files([tmp_path / "a.parquet", tmp_path / "x" / "a.parquet"], 2, tmp_path / "out.parquet")


# ---------------------------------------------------------------------------- property test
@st.composite
def recipes(draw):
    num_classes = draw(st.integers(1, 5))
    n_sources = draw(st.integers(1, 3))
    sources = []
    for j in range(n_sources):
        n = draw(st.integers(0, 40))
        weights = draw(st.lists(st.integers(0, 5), min_size=num_classes, max_size=num_classes))
        if sum(weights) == 0:
            weights[0] = 1
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        labels = rng.choice(num_classes, size=n, p=np.asarray(weights) / sum(weights))
        index = rng.choice(1000, size=n, replace=False)
        confidence = rng.choice([0.3, 0.6, 1.0], size=n)  # ties on purpose
        sources.append((f"s{j}", source(labels, index=index, confidence=confidence)))
    options = {
        "balanced": draw(st.booleans()),
        "per_class": draw(st.none() | st.integers(0, 20)),
        "total": draw(st.none() | st.integers(0, 60)),
        "classes": draw(st.none() | st.integers(1, num_classes)),
        "size": draw(st.none() | st.integers(0, 60)),
        "seed": draw(st.integers(0, 3)),
        "prefer_confident": draw(st.booleans()),
    }
    return sources, num_classes, options


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes())
def test_invariants(recipe):
    sources, num_classes, options = recipe
    manifest, counts = assemble(sources, num_classes, **options)
    names = [name for name, _ in sources]
    kept = options["classes"] or num_classes
    base = sources[0][1]

    # The manifest: known rows only, no (source, index) twice, kept classes only.
    assert not manifest.duplicated(["source", "index"]).any()
    assert set(manifest["source"]) <= set(names)
    assert (manifest["label"] < kept).all()
    for name, frame in sources:
        rows = manifest[manifest["source"] == name].merge(frame, on="index", suffixes=("", "_src"))
        assert len(rows) == (manifest["source"] == name).sum()
        assert (rows["label"] == rows["label_src"]).all()
        assert (rows["confidence"] == rows["confidence_src"]).all()
    key = pd.Categorical(manifest["source"], categories=names).codes
    order = np.lexsort((manifest["index"].to_numpy(), key, manifest["label"].to_numpy()))
    assert (order == np.arange(len(manifest))).all()

    # The counts frame agrees with the manifest and the base.
    after = np.bincount(manifest["label"], minlength=num_classes)
    assert counts["class"].tolist() == list(range(num_classes))
    assert (counts["after"].to_numpy() == after).all()
    assert (counts["before"].to_numpy() == np.bincount(base["label"], minlength=num_classes)).all()
    for name in names:
        assert (counts[f"from_{name}"].to_numpy() == per_source_class(manifest, name, num_classes)).all()

    if not options["balanced"]:
        cap = options["size"] if options["size"] is not None else (
            len(base) if options["total"] is None else options["total"])
        assert (manifest["source"] == names[0]).all()
        assert len(manifest) == min(cap, int((base["label"] < kept).sum()))
        assert not counts["short"].any()
        return

    # Balanced: caps, shortness only when exhausted, top-up only after the earlier sources.
    target = counts["target"].to_numpy()
    if options["size"] is not None:
        assert target.sum() == options["size"] and target.max() - target[:kept].min() <= 1
    else:
        total = len(base) if options["total"] is None else options["total"]
        assert target.sum() <= total
        if options["per_class"] is not None:
            assert target.max() <= options["per_class"]
    assert (target[kept:] == 0).all()
    assert (after <= target).all()
    assert (counts["short"].to_numpy() == (after < target)).all()
    available = np.stack([np.bincount(frame["label"], minlength=num_classes) for _, frame in sources])
    taken = np.stack([per_source_class(manifest, name, num_classes) for name in names])
    exhausted = taken == available
    for c in range(kept):
        if after[c] < target[c]:
            assert exhausted[:, c].all(), f"class {c} short but a source still has rows"
        for j in range(1, len(sources)):
            if taken[j, c] > 0:
                assert exhausted[:j, c].all(), f"source {j} used for class {c} before earlier ones ran out"
        assert after[c] == min(target[c], available[:, c].sum())
    if options["prefer_confident"]:
        for j, (name, frame) in enumerate(sources):
            for c in range(kept):
                chosen = manifest[(manifest["source"] == name) & (manifest["label"] == c)]["confidence"]
                left = frame[(frame["label"] == c) & ~frame["index"].isin(
                    manifest.loc[manifest["source"] == name, "index"])]["confidence"]
                if len(chosen) and len(left):
                    assert chosen.min() >= left.max()


# ---------------------------------------------------------------------------- row selection (`prefer`)
def with_margin(frame: pd.DataFrame, margin) -> pd.DataFrame:
    return frame.assign(margin=np.asarray(margin, dtype=np.float32))


def test_prefer_margin_low_takes_the_smallest_margin_rows_of_each_class():
    margin = [0.9, 0.05, 0.5, 0.01, 0.7, 0.3, 0.2, 0.6, 0.02, 0.8]
    base = with_margin(source([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]), margin)
    for seed in (0, 7):  # no ties: the seed does not matter
        manifest, _ = assemble([("base", base)], 2, per_class=2, total=10, prefer="margin_low", seed=seed)
        assert manifest["index"].tolist() == [1, 3, 6, 8]
    manifest, _ = assemble([("base", base)], 2, per_class=2, total=10, prefer="margin_high")
    assert manifest["index"].tolist() == [0, 4, 7, 9]
    manifest, _ = assemble([("base", base)], 2, balanced=False, total=3, prefer="margin_low")
    assert manifest["index"].tolist() == [1, 3, 8]  # unbalanced: the three smallest overall
    manifest, _ = assemble([("base", base)], 2, per_class=2, total=10, prefer="confident")
    assert manifest.equals(assemble([("base", base)], 2, per_class=2, total=10, prefer_confident=True)[0])


def test_prefer_margin_low_tops_up_from_the_next_source_by_its_margins():
    base = with_margin(source([0, 0, 1]), [0.4, 0.1, 0.2])
    extra = with_margin(source([1, 1, 1, 1], index=[10, 11, 12, 13]), [0.5, 0.05, 0.9, 0.3])
    manifest, counts = assemble([("base", base), ("extra", extra)], 2, per_class=3, total=6, prefer="margin_low")
    assert counts["after"].tolist() == [2, 3]
    assert manifest.loc[manifest["source"] == "extra", "index"].tolist() == [11, 13]


def test_prefer_margin_ties_are_broken_by_the_seed_deterministically():
    base = with_margin(source([0] * 20), [0.1] * 10 + [0.5] * 10)
    picks = {seed: assemble([("base", base)], 1, total=4, prefer="margin_low", seed=seed)[0]["index"].tolist()
             for seed in range(4)}
    assert all(set(rows) <= set(range(10)) for rows in picks.values())  # only the smallest margins
    assert picks[1] == assemble([("base", base)], 1, total=4, prefer="margin_low", seed=1)[0]["index"].tolist()
    assert len({tuple(rows) for rows in picks.values()}) > 1


@pytest.mark.parametrize(
    "frame, kwargs, message",
    [
        (source([0, 1]), {"prefer": "entropy_low"}, "prefer is 'entropy_low'; use one of random, confident"),
        (source([0, 1]), {"prefer": "margin_low", "prefer_confident": True}, "prefer_confident contradicts"),
        (source([0, 1]), {"prefer": "margin_low"}, "lack the 'margin' column that prefer='margin_low' needs"),
        (with_margin(source([0, 1]), [0.1, np.nan]), {"prefer": "margin_high"}, "NaN or infinite margins"),
    ],
)
def test_bad_prefer_raises_dfkd_errors(frame, kwargs, message):
    with pytest.raises(DfkdError, match=message):
        assemble([("noise", frame)], 2, **kwargs)
    assemble([("noise", frame)], 2, prefer="random")  # random never reads the margins


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes(), st.sampled_from(["margin_low", "margin_high"]), st.integers(0, 2**16))
def test_prefer_margin_keeps_the_extreme_rows(recipe, prefer, seed):
    sources, num_classes, options = recipe
    rng = np.random.default_rng(seed)
    sources = [(name, with_margin(frame, rng.choice([0.0, 0.25, 0.5], size=len(frame)))) for name, frame in sources]
    options = {**options, "prefer_confident": False, "prefer": prefer}
    manifest, _ = assemble(sources, num_classes, **options)
    assert manifest.equals(assemble(sources, num_classes, **options)[0])
    sign = 1 if prefer == "margin_low" else -1
    for name, frame in sources[:1] if not options["balanced"] else sources:
        taken = frame["index"].isin(manifest.loc[manifest["source"] == name, "index"])
        groups = [frame["label"] == c for c in range(num_classes)] if options["balanced"] else \
            [frame["label"] < (options["classes"] or num_classes)]
        for group in groups:
            chosen, left = sign * frame.loc[group & taken, "margin"], sign * frame.loc[group & ~taken, "margin"]
            if len(chosen) and len(left):
                assert chosen.max() <= left.min()


def test_cli_assemble_prefer_writes_the_margin_selection(tmp_path):
    from dfkd.stages.balance import PREFER
    from dfkd.cli import build_parser, main

    frame = with_margin(source([0, 0, 0, 1, 1, 1]), [0.3, 0.1, 0.2, 0.9, 0.4, 0.8])
    write_parquet(tmp_path / "noise.parquet", frame, None)
    out = tmp_path / "set.parquet"
    main(["assemble", "--labels", str(tmp_path / "noise.parquet"), "--num-classes", "2", "--per-class", "1",
          "--out", str(out), "--prefer", "margin_low"])
    assert read_parquet(out, ["index"])["index"].tolist() == [1, 4]
    assert read_parquet_provenance(out)["config"]["prefer"] == "margin_low"
    main(["assemble", "--labels", str(tmp_path / "noise.parquet"), "--num-classes", "2", "--per-class", "1",
          "--out", str(out)])
    assert read_parquet_provenance(out)["config"]["prefer"] == "random"  # the default
    base = ["assemble", "--labels", "a", "--num-classes", "2", "--out", "o"]
    for prefer in PREFER:  # the CLI offers every choice of dfkd.stages.balance
        assert build_parser().parse_args(base + ["--prefer", prefer]).prefer == prefer
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--prefer", "entropy_low"])


def test_schema_transfer_set_prefer_defaults_to_random_and_refuses_others():
    from dfkd.schema import definition_schema, schema_errors

    schema = definition_schema("transfer_set")
    recipe = {"sources": ["noise"]}
    assert schema_errors(recipe, schema) == [] and recipe["prefer"] == "random"
    errors = schema_errors({"sources": ["noise"], "prefer": "entropy"}, schema, "transfer_sets.x")
    assert len(errors) == 1 and errors[0].startswith("transfer_sets.x.prefer:")


def test_cli_assemble_reads_the_workflows_recipe_as_params(tmp_path):
    """The rule passes dfkd.slices.assemble_slice as --params: the same set as the flags make."""
    from dfkd.cli import main

    write_parquet(tmp_path / "noise.parquet", source([0, 0, 0, 1, 1, 1, 1]), None)
    recipe = {"sources": ["noise"], "balanced": True, "num_classes": 2, "per_class": 2, "total": None,
              "classes": None, "size": None, "seed": 3}
    by_params, by_flags = tmp_path / "p.parquet", tmp_path / "f.parquet"
    assert main(["assemble", "--labels", str(tmp_path / "noise.parquet"), "--params", json.dumps(recipe),
                 "--out", str(by_params)]) == 0
    assert main(["assemble", "--labels", str(tmp_path / "noise.parquet"), "--num-classes", "2", "--per-class", "2",
                 "--seed", "3", "--out", str(by_flags)]) == 0
    assert read_parquet(by_params).equals(read_parquet(by_flags))
    assert read_parquet_provenance(by_params)["config"] == read_parquet_provenance(by_flags)["config"]
    # the recipe is the whole recipe: a flag beside it is refused, and a missing key is named
    assert main(["assemble", "--labels", str(tmp_path / "noise.parquet"), "--params", json.dumps(recipe),
                 "--seed", "4", "--out", str(by_params)]) == 2
    del recipe["seed"]
    assert main(["assemble", "--labels", str(tmp_path / "noise.parquet"), "--params", json.dumps(recipe),
                 "--out", str(by_params)]) == 2
