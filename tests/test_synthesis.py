"""Synthesis from the teacher (dfkd/synthesis): Data Impressions as a source and as a class-conditional fill."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_fill import brightness_teacher

from dfkd.io.artifacts import read_h5_array, read_json, write_parquet
from dfkd.errors import DfkdError
from dfkd.stages.synthesize import check_params, synthesize_source

SPEC = {"num_classes": 10, "channels": 1, "image_size": 32, "mean": [0.5], "std": [0.5]}


def sharp_teacher(path: Path, impossible: int | None = None) -> Path:
    """test_fill's brightness teacher with its logits x 400, so that its softmax at T = 20 can be peaked."""
    from dfkd.io.artifacts import load_torch, save_torch

    record = load_torch(brightness_teacher(path, impossible))
    for key in ("head.weight", "head.bias"):
        record["state_dict"][key] = record["state_dict"][key] * 400
    save_torch(path, record)
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return sharp_teacher(tmp_path_factory.mktemp("teacher") / "model.pt")


@pytest.fixture(scope="module")
def bn_teacher(tmp_path_factory) -> Path:
    """An untrained LeNet-5-BN as a model file: BatchNorm layers for DeepInversion, through the same driver."""
    import torch

    from dfkd.io.artifacts import save_torch
    from dfkd.models import build_model, model_record

    torch.manual_seed(0)
    model = build_model("lenet5_bn", 1, 10, 32).eval()
    path = tmp_path_factory.mktemp("bn_teacher") / "model.pt"
    save_torch(path, model_record(model, "lenet5_bn", 1, 10, 32, [0.5], [0.5], {"stage": "test"}))
    return path


def source_params(**block) -> dict:
    return {"source": "impressions", "block": {"kind": "impressions", "count": 30, "batch": 12, "iterations": 40,
                                               "lr": 0.05, "seed": 3, **block}, **SPEC}


def make(teacher: Path, folder: Path, params: dict, **kwargs) -> dict:
    return synthesize_source(teacher, params, folder / "impressions.h5", folder / "impressions.synthesis.json", **kwargs)


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def teacher_logits(teacher: Path, images: np.ndarray) -> np.ndarray:
    import torch

    from dfkd.models import load_model
    from dfkd.training import normalize

    model, record = load_model(teacher)
    with torch.no_grad():
        return model(normalize(torch.from_numpy(images), record["mean"], record["std"])).double().numpy()


def test_stored_impressions_match_their_own_targets_better_than_other_rows(teacher, tmp_path):
    report = make(teacher, tmp_path, source_params())
    images = read_h5_array(tmp_path / "impressions.h5", "images")
    targets = read_h5_array(tmp_path / "impressions.h5", "soft_targets").astype(np.float64)
    made_for = read_h5_array(tmp_path / "impressions.h5", "class_targets")
    assert images.dtype == np.uint8 and images.shape == (30, 1, 32, 32)
    assert made_for.tolist() == list(range(10)) * 3  # equal numbers per class, in turns
    p = softmax(teacher_logits(teacher, images), 20.0)  # the teacher at T on the stored uint8 images
    kl = (targets[None, :, :] * (np.log(np.maximum(targets[None], 1e-30)) - np.log(p[:, None, :]))).sum(2)  # kl[i, j]: p_i vs t_j
    own = np.diag(kl)
    others = (kl.sum(1) - own) / (len(own) - 1)
    assert own.mean() < 0.5 * others.mean()
    assert (own < others).mean() >= 0.8
    assert report["mean_kl"] == pytest.approx(own.mean(), abs=1e-3)  # the report measures the stored bytes
    assert np.allclose(targets.sum(1), 1, atol=1e-5)
    assert (targets.argmax(1) == made_for).all()  # aim: top
    assert report["made_for_agreement"] == pytest.approx((p.argmax(1) == made_for).mean(), abs=1e-4)


def test_beta_point_one_draws_sparser_targets_than_beta_one():
    from dfkd.synthesis.impressions import sample_targets

    rng = np.random.default_rng(0)
    similarity = np.corrcoef(rng.normal(size=(10, 20)))
    targets = sample_targets(np.zeros(2000, np.int64), similarity, [1.0, 0.1], "none", rng)
    top = targets.max(1)
    assert top[1::2].mean() > top[0::2].mean() + 0.2  # the paper's intent: 0.1 is not undone by a renormalisation


def test_every_batch_mixes_the_classes_in_turns_and_each_class_takes_both_betas_in_turns():
    from dfkd.synthesis.driver import interleave
    from dfkd.synthesis.impressions import sample_targets

    assert interleave(np.array([3, 5, 8]), np.array([4, 6, 1])).tolist() == [3, 5, 8, 3, 5, 3, 5, 3, 5, 5, 5]
    rng = np.random.default_rng(0)
    classes = interleave(np.arange(10), np.full(10, 400))
    targets = sample_targets(classes, np.corrcoef(rng.normal(size=(10, 20))), [1.0, 0.1], "top", rng)
    for c in range(10):  # rows of class c alternate beta 1.0, 0.1: the second of each pair is sparser
        top = targets[classes == c].max(1)
        assert top[1::2].mean() > top[0::2].mean() + 0.1


def test_same_seed_same_bytes_and_another_seed_other_images(teacher, tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    make(teacher, tmp_path / "a", source_params())
    make(teacher, tmp_path / "b", source_params())
    make(teacher, tmp_path / "c", source_params(seed=4))
    assert (tmp_path / "a/impressions.h5").read_bytes() == (tmp_path / "b/impressions.h5").read_bytes()
    a, c = (read_h5_array(tmp_path / f"{n}/impressions.h5", "images") for n in "ac")
    assert not np.array_equal(a, c)


class Killed(Exception):
    pass


@pytest.mark.parametrize("synthesiser", ["impressions", "inversion"])
def test_a_killed_job_resumes_to_the_same_bytes(synthesiser, teacher, bn_teacher, tmp_path):
    """Three batches; killed after the second, the job makes only the third again (both synthesisers)."""
    if synthesiser == "inversion":
        model, params = bn_teacher, source_params(kind="inversion", count=12, batch=4, iterations=3, lr=0.05)
    else:
        model, params = teacher, source_params()
    (tmp_path / "whole").mkdir(), (tmp_path / "killed").mkdir()
    make(model, tmp_path / "whole", params)

    def kill_after_batch_2(state):
        if state.batches == 2:
            raise Killed

    with pytest.raises(Killed):
        make(model, tmp_path / "killed", params, checkpoint_seconds=0, on_batch=kill_after_batch_2)
    out = tmp_path / "killed/impressions.h5"
    assert not out.exists() and (tmp_path / "killed/impressions.partial.h5").exists()
    seen = []
    make(model, tmp_path / "killed", params, on_batch=lambda state: seen.append(state.batches))
    assert seen == [3]  # only the last batch was made again
    assert out.read_bytes() == (tmp_path / "whole/impressions.h5").read_bytes()
    assert not (tmp_path / "killed/impressions.partial.h5").exists()


# ---------------------------------------------------------------------------- class-conditional fill
def fill_params(**fill) -> dict:
    block = {"kind": "fill", "generator": {"kind": "impressions", "iterations": 40, "batch": 16},
             "budget": {"images": 400}, "seed": 5, **fill}
    recipe = {"sources": ["base"], "balanced": True, "num_classes": 10, "per_class": 6, "total": 60,
              "classes": None, "size": None, "seed": 0}
    return {"source": "di_fill", "set": "base_di", "replicate": 0, "fill": block, "recipe": recipe, **SPEC}


def base_labels(folder: Path, counts: list[int]) -> Path:
    """A labels file whose teacher labels hold counts[c] rows of class c."""
    label = np.repeat(np.arange(10), counts).astype(np.int64)
    frame = pd.DataFrame({"index": np.arange(len(label)), "label": label, "confidence": np.full(len(label), 0.9, np.float32),
                          "margin": np.full(len(label), 0.5, np.float32), "true_label": np.full(len(label), -1)})
    write_parquet(folder / "base.parquet", frame, None)
    return folder / "base.parquet"


def test_the_conditional_fill_makes_only_the_missing_rows_of_the_short_classes(teacher, tmp_path):
    labels = base_labels(tmp_path, [9, 6, 6, 2, 6, 0, 7, 6, 5, 6])  # short: 3 by 4, 5 by 6, 8 by 1
    out = tmp_path / "di_fill.h5"
    asked = []
    report = synthesize_source(teacher, fill_params(), out, tmp_path / "di_fill.synthesis.json", labels=[labels],
                               on_batch=lambda state: asked.append(state.asked.copy()))
    missing = np.array([0, 0, 0, 4, 0, 6, 0, 0, 1, 0])
    assert [entry["missing"] for entry in report["classes"]] == missing.tolist()
    assert asked[0].tolist() == missing.tolist()  # the first batch: exactly the rows missing, nothing else
    kept = np.bincount(read_h5_array(out, "teacher_labels"), minlength=10)
    assert (kept <= missing).all() and kept[missing == 0].sum() == 0  # never more than missing, never a full class
    assert kept.sum() > 0 and len(read_h5_array(out, "images")) == kept.sum()
    assert set(read_h5_array(out, "class_targets").tolist()) <= {3, 5, 8}  # nothing was made for a full class
    for entry in report["classes"]:  # a class the teacher did not give at once was asked again, up to 4 x missing
        assert entry["full"] == (entry["kept"] == entry["missing"])
        assert entry["made"] == entry["missing"] if entry["made"] == entry["kept"] else entry["made"] > entry["missing"]
        assert entry["made"] <= 4 * entry["missing"]
    assert report["stopped"] == "done" and report["balance"]["before_fill"][5] == 0


def test_the_conditional_fill_gives_up_a_class_the_teacher_never_outputs(tmp_path):
    teacher = sharp_teacher(tmp_path / "model.pt", impossible=5)
    labels = base_labels(tmp_path, [6, 6, 6, 6, 6, 0, 6, 6, 4, 6])
    report = synthesize_source(teacher, fill_params(), tmp_path / "f.h5", tmp_path / "f.json", labels=[labels])
    five = report["classes"][5]
    assert five["kept"] == 0 and five["made"] == 4 * 6 and not five["full"]  # 4 tries x 6 missing, then given up
    assert 5 in report["short_classes"] and report["stopped"] == "done" and report["made"] <= 4 * 8


def test_the_fill_needs_the_labels_of_the_sources_before_it_in_order(teacher, tmp_path):
    labels = base_labels(tmp_path, [6] * 10)
    other = tmp_path / "other.parquet"
    other.write_bytes(labels.read_bytes())
    with pytest.raises(DfkdError, match=r"--labels name sources \['other'\].*are \['base'\]"):
        synthesize_source(teacher, fill_params(), tmp_path / "f.h5", tmp_path / "f.json", labels=[other])
    report = synthesize_source(teacher, fill_params(), tmp_path / "f.h5", tmp_path / "f.json", labels=[labels])
    assert report["made"] == 0 and read_h5_array(tmp_path / "f.h5", "images").shape == (0, 1, 32, 32)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p["block"].update(iteration=5), r"sources\.impressions: .*unknown key\(s\) 'iteration'"),
        (lambda p: p["block"].update(aim="bottom"), r"key 'aim' = \"bottom\" is invalid"),
        (lambda p: p["block"].update(classes=[2, 12]), r"sources\.impressions\.classes: class 12 does not exist"),
        (lambda p: p["block"].update(lr=0), r"key 'lr' = 0 is invalid"),
        (lambda p: p["block"].update(betas=[]), r"key 'betas' = \[\] is invalid"),
        (lambda p: p["block"].update(kind="noise"), r"kind 'noise' is not made by `dfkd synthesize`"),
    ],
)
def test_a_bad_source_block_is_one_specific_line(change, message):
    params = source_params()
    change(params)
    with pytest.raises(DfkdError, match=message) as error:
        check_params(params)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p["fill"]["generator"].update(count=5), r"sources\.di_fill\.generator\.count: remove it"),
        (lambda p: p["fill"].update(batch=64), r"sources\.di_fill\.batch: a fill with generator 'impressions' does not use it"),
        (lambda p: p["fill"]["generator"].update(iterations=0), r"sources\.di_fill\.generator: .*'iterations' = 0"),
        (lambda p: p["recipe"].update(sources=[]), r"in transfer set 'base_di' it comes first"),
        (lambda p: p["recipe"].update(balanced=False), r"transfer_sets\.base_di: an unbalanced set never uses"),
        (lambda p: p["fill"].update(budget={"images": None, "seconds": None}), r"budget: images and seconds are both null"),
        (lambda p: p["fill"]["generator"].update(kind="noise"), r"needs a synthesiser generator"),
    ],
)
def test_a_bad_fill_block_is_one_specific_line(change, message):
    params = fill_params()
    change(params)
    with pytest.raises(DfkdError, match=message) as error:
        check_params(params)
    assert "\n" not in str(error.value)


def test_dfkd_fill_refuses_a_synthesiser_generator_in_one_line():
    from dfkd.stages.fill import check_fill_params

    params = {"source": "di_fill", "fill": {"kind": "fill", "generator": {"kind": "impressions"}}, "per_class": 5,
              "num_classes": 10, "channels": 1, "image_size": 32}
    with pytest.raises(DfkdError, match=r"sources\.di_fill: a fill with generator 'impressions' .* not `dfkd fill`"):
        check_fill_params(params)


def test_the_config_accepts_impressions_and_a_conditional_fill_and_names_a_bad_key():
    from conftest import tiny_config

    from dfkd.config import validate_config
    from dfkd.slices import conditional_slice, source_stem, synthesis_slice

    config = tiny_config()
    config["sources"]["impressions"] = {"kind": "impressions", "count": 40}
    config["sources"]["di_fill"] = {"kind": "fill", "generator": {"kind": "impressions"}}
    config["transfer_sets"]["natural_bal_di"] = {"sources": ["patches", "digits", "di_fill"]}
    config = validate_config(config)
    assert synthesis_slice(config, "fmnist", "impressions")["block"]["iterations"] > 0
    params = conditional_slice(config, "fmnist", "natural_bal_di", 2, "di_fill")
    assert params["recipe"]["sources"] == ["patches", "digits"] and params["recipe"]["seed"] == 2
    assert source_stem(config, "di_fill", "natural_bal_di", 2) == "sets/natural_bal_di/seed2/di_fill"
    assert source_stem(config, "patches", "natural_bal_di", 2) == "patches"
    bad = tiny_config()
    bad["sources"]["impressions"] = {"kind": "impressions", "iterations": -1}
    with pytest.raises(DfkdError, match=r"sources\.impressions.*iterations"):
        validate_config(bad)
    first = tiny_config()
    first["sources"]["di_fill"] = {"kind": "fill", "generator": {"kind": "impressions"}}
    first["transfer_sets"]["di_first"] = {"sources": ["di_fill", "noise"]}
    with pytest.raises(DfkdError, match=r"transfer_sets\.di_first\.sources: 'di_fill' makes only the rows .* comes first"):
        validate_config(first)


def test_the_cli_makes_a_source_and_show_tells_the_agreement(teacher, tmp_path):
    from dfkd.cli import main
    from dfkd.stages.features import extract_features
    from dfkd.stages.labels import label_source
    from dfkd.tools.show import show

    out = tmp_path / "impressions.h5"
    code = main(["synthesize", "--teacher", str(teacher), "--params", json.dumps(source_params(count=10, iterations=5)),
                 "--out", str(out), "--report", str(tmp_path / "impressions.synthesis.json"), "--threads", "1"])
    assert code == 0
    record = json.loads(__import__("h5py").File(out, "r").attrs["dfkd_provenance"])
    assert record["command"].startswith("dfkd synthesize") and record["seed"] == 3
    assert len(record["inputs"]["teacher"]["sha256"]) == 64 and record["config"]["block"]["count"] == 10
    assert "teacher label = class made for in" in show(out)
    extract_features(teacher, out, tmp_path / "features.h5")
    labels = label_source(tmp_path / "features.h5", tmp_path / "impressions.parquet")
    assert labels["made_for"].tolist() == read_h5_array(out, "class_targets").tolist()
    assert labels["label"].tolist() == read_h5_array(out, "teacher_labels").tolist()  # re-labelled as stored
    assert "teacher label = class made for in" in show(tmp_path / "impressions.parquet")
    assert read_json(tmp_path / "impressions.synthesis.json")["images_per_second"] > 0


# ---------------------------------------------------------------------------- the workflow
@pytest.mark.slow
def test_the_workflow_makes_them_and_a_new_teacher_reruns_the_synthesis_not_what_is_upstream(tmp_path):
    import os

    import yaml
    from conftest import requires_fmnist, snakemake, tiny_config, write_workdir
    from test_incremental import planned_jobs_of

    if requires_fmnist.args[0]:
        pytest.skip(requires_fmnist.kwargs["reason"])
    config = tiny_config()
    config["run_targets"] = ["fmnist"]
    del config["targets"]["fmnist_b"]
    config["sources"]["impressions"] = {"kind": "impressions", "count": 20, "batch": 20, "iterations": 3, "seed": 1}
    config["sources"]["di_fill"] = {"kind": "fill", "generator": {"kind": "impressions", "iterations": 3, "batch": 128},
                                    "budget": {"images": 300}, "seed": 2}
    config["transfer_sets"] = {"impressions": {"sources": ["impressions"], "balanced": False},
                               "noise_di": {"sources": ["noise", "di_fill"]}}
    config["targets"]["fmnist"]["sets"] = ["impressions", "noise_di"]
    workdir = write_workdir(tmp_path, config)
    targets = ["results/fmnist/transfer/impressions/seed0.parquet", "results/fmnist/transfer/noise_di/seed0.parquet"]
    snakemake(workdir, *targets)
    fill = workdir / "results/fmnist/data/sets/noise_di/seed0/di_fill.synthesis.json"
    report = read_json(fill)
    assert report["made"] > 0 and report["provenance"]["inputs"]["labels/noise"]["path"].endswith("labels/noise.parquet")
    counts = pd.read_csv(workdir / "results/fmnist/transfer/noise_di/seed0.counts.csv")
    assert (counts["from_di_fill"] == np.bincount(read_h5_array(fill.with_suffix("").with_suffix(".h5"),
                                                                "teacher_labels"), minlength=10)).all()
    assert planned_jobs_of(workdir, config, *targets) == set()
    from dfkd.tools.audit import Auditor

    entries = Auditor(workdir / "results").audit()  # the per-set files are audited like every artifact
    per_set = {str(e.path.relative_to(workdir / "results/fmnist")): e.status for e in entries if "/sets/" in str(e.path)}
    assert per_set == {f"{folder}/sets/noise_di/seed0/di_fill.{ext}": "ok" for folder, ext in
                       (("data", "h5"), ("data", "synthesis.json"), ("features", "h5"), ("labels", "parquet"))}

    def rules(jobs):
        return {rule for rule, _ in jobs}

    from dfkd.io.artifacts import load_torch, save_torch

    teacher = workdir / "results/fmnist/teacher/model.pt"  # a teacher file that changes (its bytes and time)
    record = load_torch(teacher)
    record["state_dict"]["head.bias"] = record["state_dict"]["head.bias"] + 0.01
    save_torch(teacher, record)
    later = max(p.stat().st_mtime for p in (workdir / "results").rglob("*") if p.is_file()) + 1
    os.utime(teacher, (later, later))
    jobs = planned_jobs_of(workdir, config, *targets)
    assert {"synthesize", "synthesize_fill", "extract_features", "label_source", "assemble"} <= rules(jobs)
    assert not rules(jobs) & {"prepare", "train_teacher"}
    snakemake(workdir, *targets)
    edited = yaml.safe_load(yaml.safe_dump(config))
    edited["sources"]["di_fill"]["generator"]["iterations"] = 4  # the fill's own block: that set's fill only
    assert planned_jobs_of(workdir, edited, *targets) == {
        ("synthesize_fill", "target=fmnist, set=noise_di, seed=0, source=di_fill"),
        ("extract_features", "target=fmnist, source=sets/noise_di/seed0/di_fill"),
        ("label_source", "target=fmnist, source=sets/noise_di/seed0/di_fill"),
        ("assemble", "target=fmnist, set=noise_di, seed=0"),
    }
    edited = yaml.safe_load(yaml.safe_dump(config))
    edited["sources"]["impressions"]["iterations"] = 4  # the source: its own chain, not the fill
    assert rules(planned_jobs_of(workdir, edited, *targets)) == {"synthesize", "extract_features", "label_source",
                                                                  "assemble"}


def test_deepinversion_plugs_into_the_same_driver(bn_teacher, tmp_path):
    from dfkd.synthesis import SYNTHESIZERS

    assert set(SYNTHESIZERS) >= {"impressions", "inversion"}
    params = {"source": "inverted", "block": {"kind": "inversion", "count": 6, "batch": 6, "iterations": 2}, **SPEC}
    report = synthesize_source(bn_teacher, params, tmp_path / "inverted.h5", tmp_path / "inverted.synthesis.json")
    assert report["synthesizer"] == "inversion" and report["kept"] == 6
    assert read_h5_array(tmp_path / "inverted.h5", "soft_targets").shape == (6, 10)


def test_the_summary_lists_every_synthesis_report_of_the_target_with_what_it_made(teacher, tmp_path):
    from dfkd.analysis.report import synthesis_section
    from dfkd.config import load_config
    from dfkd.slices import target_synthesis_reports

    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    config["targets"]["fmnist"]["sets"] = ["noise_bal", "impressions", "natural_bal_di"]
    assert target_synthesis_reports(config, "fmnist") == [
        "data/impressions.synthesis.json",
        *[f"data/sets/natural_bal_di/seed{k}/di_fill.synthesis.json" for k in config["seeds"]],
    ]
    data = tmp_path / "data"
    make(teacher, data, source_params())
    fill = data / "sets/base_di/seed0"
    fill.mkdir(parents=True)
    synthesize_source(teacher, fill_params(), fill / "di_fill.h5", fill / "di_fill.synthesis.json",
                      labels=[base_labels(tmp_path, [9, 6, 6, 2, 6, 0, 7, 6, 5, 6])])
    text = synthesis_section(tmp_path, ["data/impressions.synthesis.json", "data/sets/base_di/seed0/di_fill.synthesis.json"])
    lines = text.splitlines()
    assert len(lines) == 4 and "label = class made for" in lines[0]
    assert lines[2].startswith("| impressions | impressions | 3 | all (equal counts) | 30 | 30 |")
    assert lines[3].startswith("| sets/base_di/seed0/di_fill | impressions | 5 | 3: 4, 5: 6, 8: 1 |")
