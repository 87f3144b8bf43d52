"""The fill stage: draw from a generator until every teacher class is full (dfkd/stages/fill.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from dfkd.io.artifacts import read_h5_array, read_json, read_parquet
from dfkd.errors import DfkdError
from dfkd.stages.fill import check_fill_params, fill_source, partial_path
from dfkd.slices import fill_slice

LEVELS = (np.arange(10) + 0.5) / 10  # class c: images whose mean brightness is near LEVELS[c]


def brightness_teacher(path: Path, impossible: int | None = None) -> Path:
    """A LeNet-5 that classes images by brightness (nearest of ten grey levels in its features).

    `impossible`: that class's bias is -1e4, so the teacher never outputs it.
    """
    import torch

    from dfkd.io.artifacts import save_torch
    from dfkd.models import build_model, model_record
    from dfkd.training import normalize

    torch.manual_seed(0)
    model = build_model("lenet5", 1, 10, 32).eval()
    rng = np.random.default_rng(0)
    grey = LEVELS[:, None, None, None, None] * 255 + rng.normal(0, 10, (10, 16, 1, 32, 32))
    grey = np.clip(grey, 0, 255).astype(np.uint8)  # (10 levels, 16, 1, 32, 32)
    with torch.no_grad():
        centres = torch.stack([model.features(normalize(torch.from_numpy(x), [0.5], [0.5])).mean(0) for x in grey])
        model.head.weight.copy_(centres)  # logits = f.c - |c|^2 / 2: the nearest centre wins
        model.head.bias.copy_(-0.5 * (centres * centres).sum(1))
        if impossible is not None:
            model.head.bias[impossible] = -1e4
    save_torch(path, model_record(model, "lenet5", 1, 10, 32, [0.5], [0.5], {"stage": "test"}))
    return path


def slice_for(generator: dict | None = None, per_class: int = 20, **fill) -> dict:
    block = {
        "kind": "fill",
        "generator": generator or {"kind": "noise", "distribution": "gaussian", "std": 0.1},
        "budget": {"images": 6000},
        "batch": 512,
        "seed": 2,
        **fill,
    }
    return {"source": "noise_fill", "fill": block, "per_class": per_class, "num_classes": 10,
            "channels": 1, "image_size": 32}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return brightness_teacher(tmp_path_factory.mktemp("teacher") / "model.pt", impossible=3)


def run(teacher: Path, folder: Path, params: dict, **kwargs) -> dict:
    return fill_source(teacher, params, folder / "noise_fill.h5", folder / "noise_fill.fill.json", **kwargs)


def test_a_class_the_teacher_never_outputs_ends_the_budget_and_is_reported_short(teacher, tmp_path):
    report = run(teacher, tmp_path, slice_for())
    assert report["stopped"] == "images" and report["drawn"] == 6000  # the image budget, exactly
    assert report["short_classes"] == [3]
    three = report["classes"][3]
    assert three == {"class": 3, "kept": 0, "hits": 0, "draws": 6000, "full": False}
    for entry in report["classes"]:
        if entry["class"] != 3:  # every reachable class filled, each after its own count of draws
            assert entry["full"] and entry["kept"] == 20 and 20 <= entry["draws"] < 6000
            assert entry["hits"] >= 20
    assert read_json(tmp_path / "noise_fill.fill.json")["short_classes"] == [3]
    assert not partial_path(tmp_path / "noise_fill.h5").exists()
    images = read_h5_array(tmp_path / "noise_fill.h5", "images")
    assert images.dtype == np.uint8 and images.shape == (9 * 20, 1, 32, 32)


def test_a_seconds_budget_ends_too(teacher, tmp_path):
    params = slice_for()
    params["fill"]["budget"] = {"images": None, "seconds": 0.5}
    report = run(teacher, tmp_path, params)
    assert report["stopped"] == "seconds" and report["seconds"] >= 0.5 and report["classes"][3]["kept"] == 0


def test_it_stops_as_soon_as_every_class_is_full(tmp_path):
    teacher = brightness_teacher(tmp_path / "model.pt")
    report = run(teacher, tmp_path, slice_for(per_class=5))
    assert report["stopped"] == "full" and report["short_classes"] == []
    assert report["drawn"] < 6000 and report["drawn"] % 512 == 0
    assert max(entry["draws"] for entry in report["classes"]) > report["drawn"] - 512


def test_varying_its_arguments_reaches_classes_that_fixed_arguments_miss(teacher, tmp_path):
    (tmp_path / "fixed").mkdir()
    varied = run(teacher, tmp_path, slice_for())
    fixed = run(teacher, tmp_path / "fixed", slice_for(vary={}))
    assert len(fixed["short_classes"]) >= 5 > len(varied["short_classes"])
    assert set(varied["vary"]) == {"mean", "std", "resolution"}  # Gaussian noise's defaults
    assert fixed["vary"] == {}


def test_fill_is_deterministic(teacher, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    run(teacher, tmp_path / "a", slice_for())
    run(teacher, tmp_path / "b", slice_for())
    assert (tmp_path / "a/noise_fill.h5").read_bytes() == (tmp_path / "b/noise_fill.h5").read_bytes()
    other = slice_for()
    other["fill"]["seed"] = 3
    run(teacher, tmp_path / "c", other)
    a = read_h5_array(tmp_path / "a/noise_fill.h5", "images")
    c = read_h5_array(tmp_path / "c/noise_fill.h5", "images")
    assert a.shape != c.shape or not np.array_equal(a, c)


class Killed(Exception):
    pass


def test_a_rerun_after_a_kill_resumes_to_the_same_bytes(teacher, tmp_path):
    (tmp_path / "whole").mkdir(), (tmp_path / "killed").mkdir()
    run(teacher, tmp_path / "whole", slice_for())

    def kill_after_batch_4(state):
        if state.batches == 4:
            raise Killed

    with pytest.raises(Killed):
        run(teacher, tmp_path / "killed", slice_for(), checkpoint_seconds=0, on_batch=kill_after_batch_4)
    out = tmp_path / "killed/noise_fill.h5"
    assert not out.exists() and partial_path(out).exists()
    seen = []
    report = run(teacher, tmp_path / "killed", slice_for(), on_batch=lambda state: seen.append(state.batches))
    assert seen[0] == 5  # continued after the checkpointed batch 4, not from the start
    assert out.read_bytes() == (tmp_path / "whole/noise_fill.h5").read_bytes()
    assert report["drawn"] == 6000 and not partial_path(out).exists()


def test_a_checkpoint_of_other_settings_is_not_resumed(teacher, tmp_path):
    def kill(state):
        raise Killed

    with pytest.raises(Killed):
        run(teacher, tmp_path, slice_for(), checkpoint_seconds=0, on_batch=kill)
    other = slice_for()
    other["fill"]["seed"] = 5
    seen = []
    run(teacher, tmp_path, other, on_batch=lambda state: seen.append(state.batches))
    assert seen[0] == 1


def test_every_kept_row_is_labelled_as_the_teacher_labels_its_stored_image(teacher, tmp_path):
    from dfkd.stages.features import extract_features
    from dfkd.stages.labels import label_source

    report = run(teacher, tmp_path, slice_for())
    extract_features(teacher, tmp_path / "noise_fill.h5", tmp_path / "features.h5")
    labels = label_source(tmp_path / "features.h5", tmp_path / "noise_fill.parquet")
    stored = read_h5_array(tmp_path / "noise_fill.h5", "teacher_labels")
    assert np.array_equal(labels["label"].to_numpy(), stored)
    assert (labels["true_label"] == -1).all()  # teacher labels are not ground truth
    counts = np.bincount(stored, minlength=10)
    assert counts.tolist() == [entry["kept"] for entry in report["classes"]]
    assert len(read_parquet(tmp_path / "noise_fill.parquet", ["label"])) == counts.sum()


@pytest.mark.parametrize(
    "generator",
    [
        {"kind": "shapes"},
        {"kind": "strokes"},
        {"kind": "patches", "invert": 0.5},
        {"kind": "noise", "distribution": "uniform"},
    ],
)
def test_every_generator_kind_fills(teacher, tmp_path, generator):
    report = run(teacher, tmp_path, slice_for(generator, per_class=10, budget={"images": 1024}))
    assert report["drawn"] == 1024 and report["generator"]["kind"] == generator["kind"]
    assert sum(entry["kept"] for entry in report["classes"]) > 0
    assert report["vary"]  # each kind varies some argument by default


def test_a_sub_batch_is_what_the_generator_kind_makes(teacher, tmp_path):
    """Without varied arguments and with room for every row, the output is the kind's own images."""
    from dfkd.sources import TargetSpec, load_source

    generator = {"kind": "strokes", "max_strokes": 2}
    run(teacher, tmp_path, slice_for(generator, per_class=1000, budget={"images": 300}, vary={}, batch=300))
    seed = int(np.random.default_rng([2, 0]).integers(0, 2**62))  # batch 0's only sub-batch
    expected = load_source({**generator, "count": 300, "seed": seed}, TargetSpec(1, 32)).images
    assert np.array_equal(read_h5_array(tmp_path / "noise_fill.h5", "images"), expected)


def test_bad_blocks_name_the_key_and_the_fix(teacher, tmp_path):
    with pytest.raises(DfkdError, match=r"generator\.count: remove it"):
        check_fill_params(slice_for({"kind": "noise", "count": 5}))
    with pytest.raises(DfkdError, match=r"images and seconds are both null"):
        check_fill_params(slice_for(budget={"images": None, "seconds": None}))
    with pytest.raises(DfkdError, match=r"generator.*'poisson'"):
        check_fill_params(slice_for({"kind": "noise", "distribution": "poisson"}))
    with pytest.raises(DfkdError, match=r"vary\.colour: 'noise' has no argument .*resolution"):
        run(teacher, tmp_path, slice_for(vary={"colour": [0, 1]}))
    with pytest.raises(DfkdError, match=r"vary\.mean: \[0.0, 2.0\] leaves the argument's allowed range"):
        run(teacher, tmp_path, slice_for(vary={"mean": [0.0, 2.0]}))
    with pytest.raises(DfkdError, match="made by `dfkd fill`"):
        from dfkd.sources import TargetSpec, load_source

        load_source(slice_for()["fill"], TargetSpec(1, 32))


def test_fill_slice_takes_the_targets_per_class_and_validates_in_a_config():
    from dfkd.config import validate_config

    config = tiny_config()
    config["sources"]["noise_fill"] = {"kind": "fill", "generator": {"kind": "noise"}, "seed": 2}
    config = validate_config(config)
    params = fill_slice(config, "fmnist", "noise_fill")
    assert params["per_class"] == 60 and params["num_classes"] == 10 and params["image_size"] == 32
    assert params["fill"]["budget"] == {"images": 1_000_000, "seconds": None}
    config["sources"]["noise_fill"]["per_class"] = 7
    assert fill_slice(config, "fmnist", "noise_fill")["per_class"] == 7
    bad = tiny_config()
    bad["sources"]["noise_fill"] = {"kind": "fill", "generator": {"kind": "noise"}, "batchsize": 5}
    with pytest.raises(DfkdError, match="batchsize"):
        validate_config(bad)


def test_the_cli_runs_the_stage(teacher, tmp_path):
    from dfkd.cli import main

    code = main(["fill", "--teacher", str(teacher), "--params", json.dumps(slice_for(budget={"images": 1024})),
                 "--out", str(tmp_path / "noise_fill.h5"), "--report", str(tmp_path / "noise_fill.fill.json"),
                 "--threads", "1"])
    assert code == 0 and read_json(tmp_path / "noise_fill.fill.json")["drawn"] == 1024
    assert main(["fill", "--teacher", str(teacher), "--params", "{}", "--out", "x.h5", "--report", "x.json"]) == 2


@pytest.mark.slow
def test_a_killed_process_resumes_to_the_same_bytes(teacher, tmp_path):
    """SIGKILL mid-run (no clean-up at all), then re-run: the same bytes as one whole run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    params = slice_for(budget={"images": 30000}, per_class=2000)

    def command(folder: Path) -> list[str]:
        return [sys.executable, "-m", "dfkd.cli", "fill", "--teacher", str(teacher), "--params",
                json.dumps(params), "--out", str(folder / "noise_fill.h5"), "--report",
                str(folder / "noise_fill.fill.json"), "--threads", "1", "--checkpoint-seconds", "0"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "noise_fill.h5"  # one path for both runs: provenance records the command line
    subprocess.run(command(tmp_path), check=True, env=env, capture_output=True, timeout=300)
    whole = out.read_bytes()
    out.unlink()
    process = subprocess.Popen(command(tmp_path), env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not partial_path(out).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not out.exists() and partial_path(out).exists(), "the kill came too late or too early"
    subprocess.run(command(tmp_path), check=True, env=env, capture_output=True, timeout=300)
    assert out.read_bytes() == whole


def counts_file(set_name: str) -> str:
    """results/{target}/ path of seed 0's class counts of a set (dfkd.io.layout where it exists)."""
    try:
        from dfkd.io.layout import counts
    except ImportError:
        return f"transfer/{set_name}.counts.csv"
    return counts(set_name, 0)


@pytest.mark.slow
def test_a_config_with_a_fill_source_assembles_a_balanced_set_through_it(tmp_path):
    import pandas as pd
    import yaml

    from conftest import requires_fmnist, snakemake, write_workdir

    if requires_fmnist.args[0]:
        pytest.skip(requires_fmnist.kwargs["reason"])
    config = tiny_config()
    config["run_targets"] = ["fmnist"]
    del config["targets"]["fmnist_b"]
    config["sources"]["noise_fill"] = {
        "kind": "fill", "generator": {"kind": "noise", "distribution": "gaussian", "mean": 0.3, "std": 0.3},
        "budget": {"images": 60000}, "batch": 4096, "seed": 2,
    }
    config["transfer_sets"] = {"noise_bal": {"sources": ["noise", "noise_fill"]}}
    workdir = write_workdir(tmp_path, config)
    lint = snakemake(workdir, "--lint")
    assert "Congratulations" in lint.stdout + lint.stderr, lint.stdout[-3000:]
    target = f"results/fmnist/{counts_file('noise_bal')}"
    plan = snakemake(workdir, "-n", target).stdout
    assert "fill" in plan and "prepare" in plan  # fill makes noise_fill, prepare the rest
    snakemake(workdir, target)
    data = workdir / "results/fmnist/data"
    report = read_json(data / "noise_fill.fill.json")
    assert report["provenance"]["inputs"]["teacher"]["path"].endswith("teacher/model.pt")
    assert (workdir / "results/fmnist/labels/noise_fill.parquet").exists()
    counts = pd.read_csv(workdir / target).set_index("class")
    short = set(report["short_classes"])
    for c, after in counts["after"].items():  # every class the fill could reach is full
        assert after == 60 or c in short, (c, after, report["classes"][c])
    assert report["stopped"] == ("full" if not short else "images")
    # nothing to do the second time; the fill re-runs when its block changes
    assert "Nothing to be done" in snakemake(workdir, "-n", target).stdout + snakemake(workdir, "-n", target).stderr
    config["sources"]["noise_fill"]["seed"] = 3
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    plan = snakemake(workdir, "-n", target).stdout
    assert "fill" in plan and "train_teacher" not in plan and "prepare" not in plan
