"""Teachers from outside (issue 16): every form loads safely, equals the native teacher, and
runs the workflow through students and quality scores on a target without a training split."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, requires_fmnist, snakemake, tiny_config, write_workdir
from dfkd.io.artifacts import read_json, save_torch
from dfkd.errors import DfkdError
from dfkd.models import build_model, load_model, model_record
from dfkd.stages.teacher import import_teacher

SPEC = {"channels": 1, "image_size": 32, "num_classes": 10, "mean": [0.286], "std": [0.353]}


def _export_script():
    spec = importlib.util.spec_from_file_location("export_teacher", REPO / "scripts" / "export_teacher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def native_teacher(folder: Path, seed: int = 0, arch: str = "lenet5") -> Path:
    """A dfkd model file of a seeded, untrained registry model (what train_teacher writes)."""
    torch.manual_seed(seed)
    model = build_model(arch, 1, 10, 32).eval()
    path = folder / f"native{seed}.pt"
    save_torch(path, model_record(model, arch, 1, 10, 32, SPEC["mean"], SPEC["std"], {"stage": "test"}))
    return path


def teacher_forms(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The native teacher, and it as state_dict, TorchScript and .pt2 (scripts/export_teacher.py)."""
    native = native_teacher(folder, seed)
    files = _export_script().export_teacher(native, folder / f"forms{seed}")
    return {"native": native, **files}


def load_block(form: str, path: Path, **extra) -> dict:
    return {"path": str(path), "format": form, **({"arch": "lenet5"} if form == "state_dict" else {}), **extra}


def imported(folder: Path, form: str, path: Path, spec=SPEC, **extra):
    out = folder / f"imported_{form}"
    import_teacher(path, {**spec, "target": "own", "load": load_block(form, path, **extra)}, out)
    return load_model(out / "model.pt")


def one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message, message
    return message


# ---------------------------------------------------------------------------- loading
def test_every_form_gives_the_native_teachers_outputs(tmp_path):
    forms = teacher_forms(tmp_path)
    native, _ = load_model(forms["native"])
    x = torch.randn(64, 1, 32, 32)
    with torch.no_grad():
        want_logits, want_features = native(x), native.features(x)
        for form in ("state_dict", "torchscript", "export"):
            model, record = imported(tmp_path, form, forms[form])
            features = model.features(x)
            logits = model.head(features)
            assert torch.equal(model(x), want_logits) and torch.equal(logits, want_logits), form
            if form == "state_dict":  # the registry model: its own penultimate features, a plain dfkd file
                assert "format" not in record and torch.equal(features, want_features)
            else:
                assert record["format"] == form and record["features"] == "logits"
                assert torch.equal(features, want_logits)


def test_a_checkpoint_and_a_named_layer(tmp_path):
    forms = teacher_forms(tmp_path)
    native, _ = load_model(forms["native"])
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "model_state_dict": native.state_dict(), "note": "anything"}, checkpoint)
    model, record = imported(tmp_path, "state_dict", checkpoint, layer="conv")
    x = torch.randn(8, 1, 32, 32)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (8, 16 * 5 * 5) and record["features"] == "layer conv"
        assert torch.equal(features, native.conv(x).flatten(1))
        assert torch.equal(model.head(features), native(x))


def test_a_torchvision_architecture_by_name(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=10).eval()
    weights = tmp_path / "mobilenet.pt"
    torch.save(net.state_dict(), weights)
    spec = {**SPEC, "channels": 3, "mean": [0.5], "std": [0.5]}
    out = tmp_path / "tv"
    import_teacher(weights, {**spec, "target": "own", "load": {"path": str(weights), "format": "torchvision",
                                                                "arch": "mobilenet_v3_small", "layer": "avgpool"}}, out)
    model, record = load_model(out / "model.pt")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (4, 576) and torch.equal(model.head(features), net(x))
    assert read_json(out / "metrics.json")["feature_dim"] == 576


# ---------------------------------------------------------------------------- bad input
class CodeCarrier:
    """Unpickling this runs `touch marker` (what dfkd must never do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("form", ["state_dict", "torchvision", "torchscript", "export"])
def test_a_file_that_is_not_a_model(tmp_path, form):
    path = tmp_path / "notes.txt"
    path.write_text("these are not weights\n" * 20)
    with pytest.raises(DfkdError) as exc:
        imported(tmp_path, form, path, **({"arch": "resnet18"} if form == "torchvision" else {}))
    message = one_line_naming(exc, path)
    assert "torch.save" in message or "torch.jit.save" in message or "torch.export" in message


@pytest.mark.parametrize("form", ["state_dict", "torchscript", "export"])
def test_a_pickle_carrying_code_is_refused_unrun(tmp_path, form):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    if form == "state_dict":
        path.write_bytes(pickle.dumps(CodeCarrier(marker)))
    else:
        torch.save(CodeCarrier(marker), path)  # a zip with a data.pkl that calls os.system
    with pytest.raises(DfkdError) as exc:
        imported(tmp_path, form, path)
    message = one_line_naming(exc, path)
    assert not marker.exists()
    if form == "state_dict":
        assert "refuses to unpickle code" in message and "system" in message


def test_a_pt2_with_code_in_a_shape_expression_is_refused_unrun(tmp_path):
    forms = teacher_forms(tmp_path)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(forms["export"]) as src, zipfile.ZipFile(evil, "w") as dst:
        planted = False
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(".json") and b'"expr_str"' in data and not planted:
                text = data.decode()
                start = text.index('"expr_str"')
                value_start = text.index('"', text.index(":", start)) + 1
                value_end = text.index('"', value_start)
                payload = f"__import__('os').system('touch {marker}')"
                data = (text[:value_start] + json.dumps(payload)[1:-1] + text[value_end:]).encode()
                planted = True
            dst.writestr(name, data)
    assert planted, "the exported program has no shape expression to plant code in"
    with pytest.raises(DfkdError) as exc:
        imported(tmp_path, "export", evil)
    assert "shape expression" in one_line_naming(exc, evil)
    assert not marker.exists()


def test_a_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(build_model("lenet5", 1, 10, 32), path)
    with pytest.raises(DfkdError) as exc:
        imported(tmp_path, "state_dict", path)
    assert "state_dict()" in one_line_naming(exc, path)


@pytest.mark.parametrize("form", ["state_dict", "torchscript", "export"])
def test_a_wrong_input_size_names_both(tmp_path, form):
    forms = teacher_forms(tmp_path)
    with pytest.raises(DfkdError) as exc:
        imported(tmp_path, form, forms[form], spec={**SPEC, "image_size": 28})
    message = one_line_naming(exc, forms[form])
    assert "28" in message and ("image_size" in message or "shape" in message), message


@pytest.mark.parametrize("form", ["torchscript", "export", "state_dict"])
def test_a_wrong_class_count_names_both(tmp_path, form):
    forms = teacher_forms(tmp_path)
    with pytest.raises(DfkdError) as exc:
        imported(tmp_path, form, forms[form], spec={**SPEC, "num_classes": 5})
    message = one_line_naming(exc, forms[form])
    assert "10" in message and "5" in message, message
    if form != "state_dict":
        assert "outputs 10 classes" in message and "num_classes is 5" in message


def test_a_layer_that_does_not_exist(tmp_path):
    forms = teacher_forms(tmp_path)
    with pytest.raises(DfkdError) as exc:
        imported(tmp_path, "state_dict", forms["state_dict"], layer="penultimate")
    message = str(exc.value)
    assert "\n" not in message and "'penultimate'" in message and "fc" in message and "teacher.load.layer" in message


# ---------------------------------------------------------------------------- config
def own_config(folder: Path, forms: dict[str, Path]) -> dict:
    """Four targets without a train split, one per form of the same teacher; own_sd keeps a test split."""
    config = tiny_config()
    base = config["targets"]["fmnist"]
    base["dataset"]["count"] = 300
    base["student"]["epochs"] = 1
    base.pop("teacher")
    for source in ("noise", "shapes", "strokes"):
        config["sources"][source]["count"] = 200
    config["transfer_sets"] = {"real": {"sources": ["train"], "balanced": False},
                               "noise": {"sources": ["noise"], "balanced": False},
                               "synthetic_bal": {"sources": ["shapes", "strokes"]}}
    targets = {}
    for name, form, splits in (("own_sd", "state_dict", ["test"]), ("own_ts", "torchscript", []),
                               ("own_pt2", "export", [])):
        target = json.loads(json.dumps(base))
        target.update(splits=splits, teacher={"load": load_block(form, forms[form])}, total=200, per_class=20)
        if not splits:
            target.pop("dataset")
        targets[name] = target
    if "torchvision" in forms:  # an RGB target for a torchvision architecture by name
        target = json.loads(json.dumps(base))
        target.update(splits=[], total=200, per_class=20, channels=3, mean=[0.5], std=[0.5],
                      teacher={"load": {"path": str(forms["torchvision"]), "format": "torchvision",
                                        "arch": "mobilenet_v3_small", "layer": "avgpool"}})
        target.pop("dataset")
        targets["own_tv"] = target
    config["targets"], config["run_targets"] = targets, list(targets)
    return config


def torchvision_teacher(folder: Path) -> Path:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    path = folder / "mobilenet.pt"
    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=10).state_dict(), path)
    return path


def test_config_rules_for_targets_without_a_train_split(tmp_path):
    from dfkd.config import validate_config
    from dfkd.slices import target_sets

    forms = teacher_forms(tmp_path)
    config = validate_config(own_config(tmp_path, forms), check_data=True)
    assert target_sets(config, "own_ts") == ["noise", "synthetic_bal"]  # `real` left out
    bad = own_config(tmp_path, forms)
    bad["targets"]["own_ts"]["sets"] = ["real", "noise"]
    with pytest.raises(DfkdError, match=r"targets.own_ts.sets: 'real' draws on the train split"):
        validate_config(bad)
    bad = own_config(tmp_path, forms)
    bad["targets"]["own_ts"]["teacher"]["load"]["path"] = str(tmp_path / "gone.ts")
    with pytest.raises(DfkdError, match=r"teacher.load.path: teacher file .*gone.ts not found"):
        validate_config(bad, check_data=True)
    bad = own_config(tmp_path, forms)
    bad["targets"]["own_ts"]["teacher"] = {"arch": "lenet5"}
    with pytest.raises(DfkdError, match=r"no train split to train its teacher on; give teacher.load"):
        validate_config(bad)


# ---------------------------------------------------------------------------- the workflow
def _labels(workdir: Path, target: str, source: str) -> pd.DataFrame:
    return pd.read_parquet(workdir / "results" / target / "labels" / f"{source}.parquet")


@pytest.mark.slow
@requires_fmnist
def test_the_workflow_distils_each_form_without_training_data(tmp_path):
    from dfkd.stages.features import extract_features
    from dfkd.stages.labels import label_source

    forms = teacher_forms(tmp_path)
    forms["torchvision"] = torchvision_teacher(tmp_path)
    (tmp_path / "work").mkdir()
    workdir = write_workdir(tmp_path / "work", own_config(tmp_path, forms))
    snakemake(workdir)
    results = workdir / "results"
    for target in ("own_sd", "own_ts", "own_pt2", "own_tv"):
        assert not (results / target / "data" / "train.h5").exists()
        assert not (results / target / "teacher" / "log.csv").exists()  # imported, never trained
        assert not (results / target / "distance").exists()
        for set_name in ("noise", "synthetic_bal"):
            quality = read_json(results / target / "quality" / f"{set_name}.json")
            assert quality["scores"] and "distances" not in quality
        metrics = read_json(results / target / "students" / "noise" / "seed0" / "metrics.json")
        summary = (results / target / "tables" / "summary.md").read_text()
        if target == "own_sd":
            assert 0 <= metrics["test_accuracy"] <= 1 and "teacher_agreement" not in metrics
            assert read_json(results / target / "teacher" / "metrics.json")["test_accuracy"] is not None
        else:
            assert 0 <= metrics["teacher_agreement"] <= 1 and "test_accuracy" not in metrics
            assert metrics["heldout_rows"] == 20 and metrics["transfer_rows"] == 180
            assert "teacher_agreement" in summary and "hausdorff" not in summary
        provenance = json.loads(load_model(results / target / "teacher" / "model.pt")[1]["provenance"])
        from dfkd.io.provenance import file_sha256

        assert provenance["inputs"]["teacher_file"]["sha256"] == file_sha256(forms[
            {"own_sd": "state_dict", "own_ts": "torchscript", "own_pt2": "export", "own_tv": "torchvision"}[target]])
    # the same teacher used natively labels the same data identically
    native_features = tmp_path / "native_features.h5"
    extract_features(forms["native"], results / "own_sd" / "data" / "noise.h5", native_features)
    label_source(native_features, tmp_path / "native_labels.parquet")
    native = pd.read_parquet(tmp_path / "native_labels.parquet")
    pd.testing.assert_frame_equal(_labels(workdir, "own_sd", "noise"), native)
    for target in ("own_ts", "own_pt2"):
        frame = _labels(workdir, target, "noise")
        assert np.array_equal(frame["label"], native["label"]), target
        np.testing.assert_allclose(frame["confidence"], native["confidence"], rtol=1e-6)
    # a new teacher file re-runs what depends on it, and nothing else
    assert "Nothing to be done" in snakemake(workdir, "--dry-run").stdout
    other = teacher_forms(tmp_path, seed=1)
    forms["torchscript"].write_bytes(other["torchscript"].read_bytes())
    planned = snakemake(workdir, "--dry-run").stdout
    assert "rule import_teacher:" in planned and "wildcards: target=own_ts" in planned
    assert "target=own_sd" not in planned and "target=own_pt2" not in planned and "target=own_tv" not in planned
    assert "rule prepare:" not in planned
