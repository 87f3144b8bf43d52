"""Distillation: the KD loss, gathering a transfer set, cached vs online teacher logits,
bitwise resume with augmentation (and dropout), refusals."""
import os
import signal
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import assert_same_weights, write_tiny_splits
from dfkd.io.artifacts import load_torch, read_json, write_h5, write_parquet
from dfkd.stages.distill import distill_student, kd_loss, kd_step_loss
from dfkd.io.rows import read_rows
from dfkd.errors import DfkdError
from dfkd.models import load_model
from dfkd.stages.teacher import train_teacher
from dfkd.augment import view_codes
from dfkd.training import TensorLoader, make_generator, normalize, predict_view_logits


# ---------------------------------------------------------------------------- kd_loss
def test_kd_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    s, t, T = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3, 4.0

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p, q = softmax(t / T), softmax(s / T)
    expected = T * T * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    got = kd_loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), T)
    assert got.dtype == torch.float32 and got.shape == ()
    assert abs(float(got) - expected) < 1e-5 * max(1.0, abs(expected))


def test_kd_loss_is_zero_for_equal_logits_and_has_gradient():
    t = torch.randn(8, 10)
    assert abs(float(kd_loss(t, t, 20.0))) < 1e-6
    s = torch.randn(8, 10, requires_grad=True)
    kd_loss(s, t, 20.0).backward()
    assert s.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- read_rows
def test_read_rows_keeps_order_and_repeats(tmp_path, monkeypatch):
    monkeypatch.setattr("dfkd.io.rows.BLOCK", 4)  # several blocks
    array = np.arange(30 * 2, dtype=np.float32).reshape(30, 2)
    write_h5(tmp_path / "a.h5", {"logits": array}, None)
    index = np.array([29, 0, 5, 5, 17, 3])
    np.testing.assert_array_equal(read_rows(tmp_path / "a.h5", "logits", index, (2,)), array[index])
    with pytest.raises(DfkdError, match="30 rows.*row 30"):
        read_rows(tmp_path / "a.h5", "logits", np.array([1, 30]), (2,))
    with pytest.raises(DfkdError, match="expected"):
        read_rows(tmp_path / "a.h5", "logits", index, (3,))


# ---------------------------------------------------------------------------- distillation runs
def student(**block):
    return {"arch": "lenet5_half", "epochs": 2, "batch_size": 50, "optimizer": {"name": "adam", "lr": 3e-3},
            "schedule": "onecycle", "temperature": 4.0, "augment": {}, "seed": 1, "amp": False, **block}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained teacher, two sources (the train split and noise), their feature files, a manifest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("world")
    files = write_tiny_splits(root, (("train", 400, 0), ("test", 100, 1)))
    noise = np.random.default_rng(2).integers(0, 256, (120, 1, 32, 32)).astype(np.uint8)
    files["noise"] = root / "noise.h5"
    write_h5(files["noise"], {"images": noise}, None)
    target = {"channels": 1, "image_size": 32, "num_classes": 4, "mean": [0.5], "std": [0.5],
              "teacher": {"arch": "lenet5", "epochs": 2, "batch_size": 64, "optimizer": {"lr": 3e-3},
                          "schedule": "constant", "seed": 0, "amp": False}}
    train_teacher(files["train"], files["test"], target, root / "teacher")
    teacher, _ = load_model(root / "teacher" / "model.pt")
    features = {}
    for source in ("train", "noise"):  # what the features stage writes, computed independently here
        with h5py.File(files[source], "r") as handle:
            x = normalize(torch.from_numpy(handle["images"][()]), [0.5], [0.5])
        with torch.no_grad():
            f = teacher.features(x)
            logits = teacher.head(f)
        features[source] = root / f"features_{source}.h5"
        write_h5(features[source], {"features": f.numpy(), "logits": logits.numpy()}, None)
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({
        "source": ["train"] * 150 + ["noise"] * 100,
        "index": np.concatenate([rng.integers(0, 400, 150), rng.permutation(120)[:100]]),
        "label": rng.integers(0, 4, 250), "confidence": rng.random(250),
    }).sample(frac=1.0, random_state=0).reset_index(drop=True)
    write_parquet(root / "transfer.parquet", frame, None)
    torch.set_num_threads(threads)
    return {"root": root, "files": files, "features": features, "target": target,
            "teacher": root / "teacher" / "model.pt", "manifest": root / "transfer.parquet"}


def assert_close_weights(a, b):
    """Two students' model.pt files hold the same tensors up to float rounding."""
    wa, wb = (load_torch(Path(path) / "model.pt")["state_dict"] for path in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


def run(world, out, block, cached=False, **kwargs):
    data = {source: world["files"][source] for source in ("train", "noise")}
    target = {**world["target"], "student": block}
    return distill_student(world["teacher"], world["manifest"], data, world["features"] if cached else None,
                           world["files"]["test"], target, out, **kwargs)


def test_cached_logits_equal_online_logits(world, tmp_path):
    online = run(world, tmp_path / "online", student())
    cached = run(world, tmp_path / "cached", student(), cached=True)
    assert (online["teacher_logits"], cached["teacher_logits"]) == ("online", "cached")
    assert_close_weights(tmp_path / "online", tmp_path / "cached")
    metrics = read_json(tmp_path / "cached" / "metrics.json")
    assert metrics["transfer_rows"] == 250 and metrics["transfer_rows_by_source"] == {"train": 150, "noise": 100}
    assert "selected on the test set" in metrics["best_epoch_note"]
    assert 1 <= metrics["best_epoch"] <= 2 and metrics["best_epoch_accuracy"] >= metrics["test_accuracy"]
    assert metrics["test_accuracy"] > 0.4  # learns something from 250 rows in 2 epochs (chance 0.25)
    assert len((tmp_path / "cached" / "log.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("augment", [{"flip": True}, {"flip": True, "invert": 0.5}])
def test_per_view_logits_equal_the_online_teacher(world, tmp_path, monkeypatch, augment):
    """Flip/invert-only augmentation: the teacher runs once per view before training, and the
    student gets what the online teacher would have given it (same images, same draws)."""
    per_view = run(world, tmp_path / "per_view", student(augment=augment))
    assert per_view["teacher_logits"] == "per_view"
    monkeypatch.setattr("dfkd.stages.distill.view_codes", lambda cfg: None)  # force the online teacher
    online = run(world, tmp_path / "online", student(augment=augment))
    assert online["teacher_logits"] == "online"
    assert_close_weights(tmp_path / "per_view", tmp_path / "online")
    assert abs(per_view["test_accuracy"] - online["test_accuracy"]) <= 0.02


def test_per_view_step_loss_equals_online_step_loss(world):
    teacher = load_model(world["teacher"])[0].requires_grad_(False)
    augment = {"flip": True, "invert": 0.5}
    views = view_codes(augment)
    with h5py.File(world["files"]["noise"], "r") as handle:
        images = torch.from_numpy(handle["images"][:64])
    logits = predict_view_logits(teacher, images, views, [0.5], [0.5])  # (64, V, K)
    assert logits.shape == (64, len(views), 4)
    student_net = load_model(world["teacher"])[0]  # any model will do: both losses see the same one
    norm = ([0.5], [0.5])
    online = kd_step_loss(student_net, teacher, augment, 4.0, norm, norm, cached=False)
    cached = kd_step_loss(student_net, teacher, augment, 4.0, norm, norm, cached=True, views=views)
    for step in range(3):
        a = online((images,), make_generator("cpu", 0, "step", 0, step))
        b = cached((images, logits), make_generator("cpu", 0, "step", 0, step))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    loader = TensorLoader([images, logits], 16, seed=0)  # rows and their views' logits stay together
    for _, (x, t) in loader.batches(0):
        assert t.shape == (len(x), len(views), 4)


@pytest.mark.parametrize("augment, logits", [({"flip": True, "translate": 0.1, "noise": 0.02}, "online"),
                                             ({"flip": True, "invert": 0.5}, "per_view")])
def test_resume_with_augmentation_is_bitwise_identical(world, tmp_path, augment, logits):
    block = student(augment=augment)
    reference = run(world, tmp_path / "reference", block)
    assert reference["teacher_logits"] == logits

    def term(epoch, step):
        if (epoch, step) == (1, 1):
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        run(world, tmp_path / "resumed", block, cached=True, on_step=term)  # augmenting: cache unused
    assert stopped.value.code == 143
    resumed = run(world, tmp_path / "resumed", block, cached=True)
    assert_same_weights(tmp_path / "reference" / "model.pt", tmp_path / "resumed" / "model.pt")
    assert resumed["test_accuracy"] == reference["test_accuracy"]


def test_changed_temperature_refuses_checkpoint(world, tmp_path):
    run(world, tmp_path, student(epochs=1))
    with pytest.raises(DfkdError, match=r"student.temperature: 4.0 -> 20.0"):
        run(world, tmp_path, student(epochs=1, temperature=20.0))


def test_mismatched_teacher_and_missing_source_are_refused(world, tmp_path):
    target = {**world["target"], "num_classes": 5, "student": student()}
    with pytest.raises(DfkdError, match="num_classes=4"):
        distill_student(world["teacher"], world["manifest"], world["files"], None, world["files"]["test"],
                        target, tmp_path)
    target = {**world["target"], "student": student()}
    with pytest.raises(DfkdError, match=r"\['noise'\]"):
        distill_student(world["teacher"], world["manifest"], {"train": world["files"]["train"]}, None,
                        world["files"]["test"], target, tmp_path)


def test_nan_loss_is_reported(world, tmp_path, monkeypatch):
    monkeypatch.setattr("dfkd.stages.distill.kd_loss", lambda s, t, T: s.sum() * float("nan"))
    with pytest.raises(DfkdError, match=r"epoch 1, step 1 of 5.*student.optimizer.lr.*student.temperature"):
        run(world, tmp_path, student())
