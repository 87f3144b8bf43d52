"""Teacher training on a tiny separable problem: it learns, writes its artifacts, and resumes
after a crash, a SIGTERM or a SIGKILL with bitwise the same final weights (on the CPU)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import assert_same_weights, tiny_split
from dfkd.io.artifacts import load_torch, read_json, write_h5
from dfkd.errors import DfkdError
from dfkd.models import load_model
from dfkd.stages.teacher import train_teacher

REPO = Path(__file__).resolve().parents[1]


def write_tiny_data(folder: Path, train: int = 512, test: int = 128) -> tuple[Path, Path]:
    paths = []
    for name, n, seed in (("train", train, 0), ("test", test, 1)):
        images, labels = tiny_split(n, seed)
        write_h5(folder / f"{name}.h5", {"images": images, "labels": labels}, {"stage": "test"})
        paths.append(folder / f"{name}.h5")
    return paths[0], paths[1]


def tiny_target(**teacher) -> dict:
    block = {"arch": "lenet5", "epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 3e-3},
             "schedule": "onecycle", "augment": {"flip": True, "translate": 0.1}, "seed": 0, "amp": False}
    return {"channels": 1, "image_size": 32, "num_classes": 4, "mean": [0.5], "std": [0.5],
            "teacher": {**block, **teacher}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run that the interrupted ones must reproduce."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference")
    metrics = train_teacher(*data, tiny_target(), out)
    torch.set_num_threads(threads)
    return out, metrics


def test_teacher_learns_and_writes_artifacts(reference):
    out, metrics = reference
    assert metrics["test_accuracy"] > 0.6  # chance is 0.25
    assert len(metrics["per_class_accuracy"]) == 4 and metrics["device"] == "cpu"
    assert read_json(out / "metrics.json")["test_accuracy"] == metrics["test_accuracy"]
    assert read_json(out / "metrics.json")["provenance"]["stage"] == "teacher"
    log = (out / "log.csv").read_text().splitlines()
    assert log[0] == "epoch,loss,test_accuracy,lr,seconds" and len(log) == 4
    model, record = load_model(out / "model.pt")
    assert record["arch"] == "lenet5" and record["num_classes"] == 4
    assert json.loads(record["provenance"])["inputs"]["train"]["sha256"]


def test_resume_after_crash_is_bitwise_identical(data, reference, tmp_path):
    def crash(epoch, step):
        if (epoch, step) == (1, 2):
            raise KeyboardInterrupt  # like a kill: the last checkpoint is from the end of epoch 1
    with pytest.raises(KeyboardInterrupt):
        train_teacher(*data, tiny_target(), tmp_path, on_step=crash)
    assert load_torch(tmp_path / "checkpoint.pt")["progress"]["epoch"] == 1
    train_teacher(*data, tiny_target(), tmp_path)
    assert_same_weights(reference[0] / "model.pt", tmp_path / "model.pt")


def test_resume_after_sigterm_mid_epoch_is_bitwise_identical(data, reference, tmp_path):
    def term(epoch, step):
        if (epoch, step) == (1, 2):
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        train_teacher(*data, tiny_target(), tmp_path, on_step=term)
    assert stopped.value.code == 143
    progress = load_torch(tmp_path / "checkpoint.pt")["progress"]
    assert (progress["epoch"], progress["step"]) == (1, 3)
    metrics = train_teacher(*data, tiny_target(), tmp_path)
    assert_same_weights(reference[0] / "model.pt", tmp_path / "model.pt")
    assert metrics["test_accuracy"] == reference[1]["test_accuracy"]


def test_changed_config_refuses_checkpoint(data, tmp_path):
    train_teacher(*data, tiny_target(epochs=1), tmp_path)
    with pytest.raises(DfkdError, match=r"checkpoint.pt.*teacher.optimizer.lr: 0.003 -> 0.01"):
        train_teacher(*data, tiny_target(epochs=1, optimizer={"name": "adam", "lr": 1e-2}), tmp_path)
    fresh = train_teacher(*data, tiny_target(epochs=1, optimizer={"name": "adam", "lr": 1e-2}), tmp_path / "fresh")
    again = train_teacher(*data, tiny_target(epochs=1, optimizer={"name": "adam", "lr": 1e-2}), tmp_path,
                          fresh_on_mismatch=True)
    assert again["test_accuracy"] == fresh["test_accuracy"]
    assert_same_weights(tmp_path / "fresh" / "model.pt", tmp_path / "model.pt")


def test_wrong_data_shape_is_refused(data, tmp_path):
    target = {**tiny_target(), "image_size": 28}
    with pytest.raises(DfkdError, match=r"train.h5:/images has shape"):
        train_teacher(*data, target, tmp_path)


_CHILD = """
import json, sys, torch
from pathlib import Path
torch.set_num_threads(1)
from dfkd.stages.teacher import train_teacher
train_teacher(Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), Path(sys.argv[4]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_subprocess_resumes_bitwise(data, tmp_path, sig):
    """A real signal to a real training process, then a fresh process resumes it."""
    target = tiny_target(epochs=8)
    reference = tmp_path / "reference"
    train_teacher(*data, target, reference)
    out = tmp_path / "killed"
    args = [sys.executable, "-c", _CHILD, str(data[0]), str(data[1]), json.dumps(target), str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(sig)
    output = child.communicate(timeout=60)[0]
    assert child.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL), output
    assert not (out / "model.pt").exists()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from" in done.stdout
    assert_same_weights(reference / "model.pt", out / "model.pt")
