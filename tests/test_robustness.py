"""Hostile and mistaken inputs end in one clear line, or a stated warning, never a traceback or a
silent wrong result (issue 18): config files (duplicate keys, not UTF-8, several files merged),
dataset roots checked at validation, CLI arguments, Ctrl-C, a closed pipe, pickled files,
empty or short transfer sets, labels past their data, a teacher at chance accuracy.
"""
from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dfkd import cli
from dfkd import config as dc
from dfkd import slices
from dfkd.io.artifacts import load_torch, read_json, read_parquet_provenance, write_h5
from dfkd.stages.balance import assemble_files
from dfkd.errors import DfkdError
from dfkd.stages.labels import label_source
from dfkd.io.provenance import make_provenance
from dfkd.stages.teacher import teacher_warning, train_teacher
from dfkd.io.yaml_io import load_yaml, merge_config

from conftest import REPO, snakemake, tiny_config, tiny_split
from test_reliability import (  # noqa: F401 (world: a fixture)
    SPEC, assert_clean_error, child_env, dfkd, distill_args, student, wait_for, world,
)


def dump(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- config files
def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_targets: [fmnist]\ntargets:\n  fmnist:\n    channels: 1\n    channels: 3\n")
    with pytest.raises(DfkdError) as info:
        dc.load_config(path)
    message = str(info.value)
    assert str(path) in message and "'channels'" in message and "lines 4 and 5" in message, message
    assert len(message.splitlines()) == 1
    # a YAML merge key is no duplicate; the same key in two different mappings neither
    path.write_text("base: &b {x: 1}\nover:\n  <<: *b\n  y: 2\na: {x: 1}\nb: {x: 2}\n")
    assert load_yaml(path)["over"] == {"x": 1, "y": 2}


def test_a_config_that_is_not_utf8_is_named_with_its_byte_offset(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run_targets: [fmnist]\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DfkdError) as info:
        dc.load_config(path)
    message = str(info.value)
    assert str(path) in message and "offset 27" in message and "line 2" in message and "UTF-8" in message
    result = dfkd("validate", path)
    assert_clean_error(result, str(path), "offset 27")


def test_merge_config_merges_as_snakemake_does():
    from snakemake.utils import update_config

    rng = random.Random(0)

    def tree(depth):
        keys = rng.sample("abcde", rng.randint(1, 4))
        return {k: tree(depth - 1) if depth and rng.random() < 0.5 else rng.choice([1, [2], "x", None]) for k in keys}

    for _ in range(200):
        base, overlay = tree(3), tree(3)
        expected = json.loads(json.dumps(base))
        try:
            update_config(expected, json.loads(json.dumps(overlay)))
        except (AttributeError, TypeError):
            continue  # Snakemake fails where a mapping replaces a non-mapping; we replace it
        assert merge_config(json.loads(json.dumps(base)), overlay) == expected


def test_validate_accepts_several_files_merged_like_configfile(tmp_path):
    result = dfkd("validate", REPO / "config.yaml", REPO / "presets" / "tuning.yaml")
    assert result.returncode == 0 and "config.yaml + " in result.stdout, result.stderr
    config = dc.load_config(REPO / "config.yaml", REPO / "presets" / "seeds.yaml")
    assert config["seeds"] == [0, 1, 2, 3, 4] and set(config["variants"]) >= {"noaug"}
    # the overlay's later value wins inside nested mappings, the rest stays
    over = dump(tmp_path / "over.yaml", {"targets": {"fmnist": {"student": {"epochs": 3}}}})
    merged = dc.load_config(REPO / "config.yaml", over)
    assert merged["targets"]["fmnist"]["student"]["epochs"] == 3
    assert merged["targets"]["fmnist"]["student"]["temperature"] == 20


# ---------------------------------------------------------------------------- dataset roots
def test_validate_checks_the_data_of_built_targets_only(tmp_path):
    # the default config: mnist, cifar10, cifar100 lack data here but are not built
    assert dfkd("validate", REPO / "config.yaml").returncode == 0
    result = dfkd("validate", REPO / "config.yaml", REPO / "presets" / "full.yaml")
    err = assert_clean_error_lines(result)
    assert "targets.cifar10.dataset: CIFAR10 (train split) not found under root data/cifar10" in err, err
    assert "looked for data/cifar10/cifar-10-batches-py/" in err and "cifar-10-python.tar.gz" in err, err
    config = tiny_config()
    config["targets"]["fmnist"]["dataset"] = {"kind": "imagefolder", "root": str(tmp_path / "photos")}
    with pytest.raises(DfkdError, match=r"targets.fmnist.dataset.root: image folder .*photos/train does not exist"):
        dc.validate_config(config, check_data=True)
    dc.validate_config(config)  # without check_data: the schema and cross-field rules only
    config["run_targets"] = ["fmnist_b"]  # fmnist is no longer built
    dc.validate_config(config, check_data=True)


def assert_clean_error_lines(result) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


@pytest.fixture
def workdir(tmp_path):
    for name in ("Snakefile", "rules", "report", "envs", "config.yaml", "presets"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


def test_dry_run_with_the_full_preset_fails_naming_the_missing_data(workdir):
    result = snakemake(workdir, "-n", "--configfile", "presets/full.yaml", check=False, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "CIFAR10 (train split) not found under root data/cifar10" in output and "looked for" in output, output[-3000:]


def test_dry_run_refuses_a_config_with_a_duplicate_key(workdir):
    text = (workdir / "config.yaml").read_text()
    (workdir / "config.yaml").write_text(text.replace("results: results\n", "results: results\nresults: out\n", 1))
    result = snakemake(workdir, "-n", check=False, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "key 'results' appears twice" in output and "lines 4 and 5" in output, output[-3000:]


# ---------------------------------------------------------------------------- CLI arguments and signals
@pytest.mark.parametrize("args, fragment", [
    (["train-teacher", "--threads", "-3", "--train", "a", "--test", "b", "--params", "{}", "--out-dir", "o"],
     "argument --threads: -3 is below 1"),
    (["features", "--model", "m", "--data", "d", "--out", "o", "--batch-size", "0"], "argument --batch-size: 0 is below 1"),
    (["features", "--model", "m", "--data", "d", "--out", "o", "--batch-size", "many"], "'many' is not a whole number"),
    (["assemble", "--labels", "l.parquet", "--num-classes", "10", "--out", "o", "--per-class", "0"],
     "argument --per-class: 0 is below 1"),
])
def test_bad_numbers_are_one_line_usage_errors(args, fragment, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err


@pytest.mark.parametrize("command, params, missing", [
    ("prepare", {"source": {"kind": "noise"}, "image_size": 32}, "'channels'"),
    ("train-teacher", {**SPEC}, "'teacher'"),
    ("distill", {**SPEC}, "'student'"),
])
def test_params_lacking_a_key_name_it_and_the_stage(world, tmp_path, capsys, command, params, missing):  # noqa: F811
    text = json.dumps(params)
    args = {
        "prepare": ["prepare", "--name", "x", "--params", text, "--out", tmp_path / "x.h5"],
        "train-teacher": ["train-teacher", "--train", world["files"]["real"], "--test", world["files"]["test"],
                          "--params", text, "--out-dir", tmp_path / "t"],
        "distill": distill_args(world, params, tmp_path / "s"),
    }[command]
    assert cli.main([str(arg) for arg in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dfkd {command}: error: --params lacks the key {missing}"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_ctrl_c_during_distill_saves_a_checkpoint_and_exits_like_sigterm(world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    command = [sys.executable, "-m", "dfkd.cli", *map(str, distill_args(world, {**SPEC, "student": student()}, out))]
    child = subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(out / "checkpoint.pt", child)
    assert child.poll() is None, "dfkd distill ended before it could be interrupted:\n" + child.communicate()[0]
    child.send_signal(signal.SIGINT)
    output = child.communicate(timeout=60)[0]
    assert child.returncode == 143 and "saved" in output and "Traceback" not in output, output
    assert 1 <= load_torch(out / "checkpoint.pt")["progress"]["epoch"] < student()["epochs"]
    assert not (out / "model.pt").exists()


def test_ctrl_c_elsewhere_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_validate", interrupted)
    assert cli.main(["validate", "config.yaml"]) == 130
    assert capsys.readouterr().err.strip() == "dfkd validate: interrupted"


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`dfkd audit ... | head`: the reader leaves before dfkd writes."""
    child = subprocess.Popen([sys.executable, "-m", "dfkd.cli", "validate", str(REPO / "config.yaml")],
                             env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before dfkd has even imported its modules
    err = child.communicate(timeout=120)[1].decode()
    assert child.returncode == 141 and err == "", err


class Calls:
    """Unpickled, it would call print (harmless; the unpickler must refuse it anyway)."""

    def __reduce__(self):
        return (print, ("unpickled",))


@pytest.mark.parametrize("payload", ["global", "operand"])
def test_pickled_files_never_suggest_weights_only_false(tmp_path, payload):
    import pickle

    import torch

    path = tmp_path / "model.pt"
    if payload == "global":  # a torch file holding an object whose class torch does not allow
        torch.save({"x": Calls()}, path)
    else:  # a plain pickle (not a torch zip file) with an opcode the weights-only unpickler refuses
        path.write_bytes(pickle.dumps({"x": Calls()}, protocol=4))
    with pytest.raises(DfkdError) as info:
        load_torch(path)
    message = str(info.value)
    assert str(path) in message and "refuses to unpickle" in message, message
    assert "weights_only=False" not in message and "set to `False`" not in message and "Re-running" not in message


# ---------------------------------------------------------------------------- empty, short, out of range
def labels_file(path: Path, labels, index=None) -> Path:
    from dfkd.io.artifacts import write_parquet

    labels = np.asarray(labels, dtype=np.int64)
    frame = pd.DataFrame({"index": np.arange(len(labels)) if index is None else np.asarray(index),
                          "label": labels, "confidence": np.ones(len(labels), dtype=np.float32)})
    write_parquet(path, frame, {"stage": "test"})
    return path


def test_per_class_zero_is_refused_not_an_empty_set(tmp_path):
    source = labels_file(tmp_path / "noise.parquet", np.arange(10).repeat(3))
    with pytest.raises(DfkdError, match="per_class=0 asks for an empty transfer set"):
        assemble_files([source], 10, tmp_path / "set.parquet", per_class=0)
    result = dfkd("assemble", "--labels", source, "--num-classes", 10, "--out", tmp_path / "set.parquet",
                  "--per-class", 0)
    assert result.returncode == 2 and "--per-class: 0 is below 1" in result.stderr
    assert not (tmp_path / "set.parquet").exists()


def test_a_set_that_would_be_empty_is_an_error(tmp_path):
    source = labels_file(tmp_path / "noise.parquet", [7] * 20)  # the teacher sees only class 7
    with pytest.raises(DfkdError, match="would have 0 rows"):
        assemble_files([source], 10, tmp_path / "set.parquet", classes=2)
    assert not (tmp_path / "set.parquet").exists()


def test_a_short_set_says_so_on_stderr_and_in_provenance(tmp_path, capsys):
    source = labels_file(tmp_path / "noise.parquet", [0, 0, 3, 3, 3])  # 5 rows over 10 classes
    for balanced in (True, False):
        out = tmp_path / f"set{balanced}.parquet"
        assemble_files([source], 10, out, tmp_path / "counts.csv", balanced=balanced, size=50)
        err = capsys.readouterr().err
        assert "assemble: warning:" in err and "5 rows, short of size=50" in err, err
        warnings = read_parquet_provenance(out)["warnings"]
        assert len(warnings) == 1 and "short of size=50" in warnings[0]
        if balanced:
            assert "10 class(es) short of their target" in err and "0 (2/5)" in err
    assemble_files([source], 10, tmp_path / "full.parquet", balanced=False)  # nothing asked, nothing short
    assert "warning" not in capsys.readouterr().err
    assert "warnings" not in read_parquet_provenance(tmp_path / "full.parquet")


def stale_chain(tmp_path: Path, rows_now: int) -> tuple[Path, Path, Path]:
    """data/noise.h5 with 8 rows, its features, labels; then the data re-made with `rows_now` rows."""
    data = tmp_path / "data" / "noise.h5"
    write_h5(data, {"images": np.zeros((8, 1, 32, 32), np.uint8)}, {"stage": "test"})
    features = tmp_path / "features" / "noise.h5"
    logits = np.eye(4, dtype=np.float32)[np.arange(8) % 4] * 5
    write_h5(features, {"features": logits, "logits": logits}, make_provenance("features", {}, {"data": data}))
    labels = tmp_path / "labels" / "noise.parquet"
    label_source(features, labels)
    write_h5(data, {"images": np.zeros((rows_now, 1, 32, 32), np.uint8)}, {"stage": "test"})
    return data, features, labels


def test_labels_past_their_data_file_are_refused_naming_both(tmp_path):
    data, features, labels = stale_chain(tmp_path, rows_now=5)
    with pytest.raises(DfkdError) as info:
        assemble_files([labels], 4, tmp_path / "set.parquet", tmp_path / "counts.csv", per_class=2)
    message = str(info.value)
    assert str(labels) in message and str(data) in message and "row index 7" in message and "5 rows" in message
    assert not (tmp_path / "counts.csv").exists()
    with pytest.raises(DfkdError, match=r"has 8 rows but its data file .*noise.h5 has 5: the features are stale"):
        label_source(features, tmp_path / "again.parquet")
    data, features, labels = stale_chain(tmp_path / "fine", rows_now=8)
    assemble_files([labels], 4, tmp_path / "fine.parquet", per_class=2)


# ---------------------------------------------------------------------------- a teacher at chance
def test_teacher_warning_below_the_threshold_only():
    metrics = {"test_accuracy": 0.117, "per_class_accuracy": [0.1] * 10}
    warning = teacher_warning(metrics, 0.5)
    assert "11.7%" in warning and "50%" in warning and "chance: 10.0% for 10 classes" in warning
    assert teacher_warning(metrics, 0.1) is None
    assert teacher_warning({"test_accuracy": 0.9}, 0.5) is None


def test_a_teacher_below_min_accuracy_warns_in_its_log_and_metrics(tmp_path, capsys):
    paths = []
    for name, n, seed in (("train", 64, 0), ("test", 32, 1)):
        images, labels = tiny_split(n, seed)
        write_h5(tmp_path / f"{name}.h5", {"images": images, "labels": labels}, {"stage": "test"})
        paths.append(tmp_path / f"{name}.h5")
    target = {"channels": 1, "image_size": 32, "num_classes": 4, "mean": [0.5], "std": [0.5],
              "teacher": {"arch": "lenet5", "epochs": 1, "batch_size": 64, "amp": False}}
    metrics = train_teacher(*paths, target, tmp_path / "teacher", min_accuracy=0.99)
    assert metrics["test_accuracy"] < 0.99 and "below min_accuracy 99%" in metrics["warning"]
    assert read_json(tmp_path / "teacher" / "metrics.json")["warning"] == metrics["warning"]
    assert "WARNING: teacher test accuracy" in capsys.readouterr().err
    metrics = train_teacher(*paths, target, tmp_path / "teacher0", min_accuracy=0.0)
    assert "warning" not in metrics and "warning" not in read_json(tmp_path / "teacher0" / "metrics.json")


def test_min_accuracy_is_a_teacher_setting_outside_its_slice():
    config = dc.validate_config(tiny_config())
    assert config["targets"]["fmnist"]["teacher"]["min_accuracy"] == 0.5  # schema default, teachers only
    assert "min_accuracy" not in config["targets"]["fmnist"]["student"]
    changed = tiny_config()
    changed["targets"]["fmnist"]["teacher"]["min_accuracy"] = 0.9
    changed = dc.validate_config(changed)
    assert slices.teacher_slice(changed, "fmnist") == slices.teacher_slice(config, "fmnist")  # no retraining
