"""Reliability: runs survive real kills, bad inputs are refused clearly, nothing is lost.

- `dfkd distill` killed for real (SIGKILL, SIGTERM) in a subprocess resumes to bitwise the
  same student as an uninterrupted run (CPU, one thread);
- model and checkpoint files of another architecture, truncated torch files, corrupt
  parquet and HDF5 inputs of the wrong dtype or rank give a DfkdError (CLI: exit 2, one line,
  no traceback) that names the file, and leave no output behind;
- an exception in the middle of any artifact write leaves no file and no temp file, and an
  older artifact at the destination keeps its bytes;
- torch files are loaded with weights_only=True: a pickled object is refused, never run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dfkd.io import artifacts
from dfkd.io.artifacts import (
    H5Writer, load_torch, read_json, save_torch, write_h5, write_json, write_parquet,
)
from dfkd.stages.distill import distill_student
from dfkd.errors import DfkdError
from dfkd.stages.features import extract_features
from dfkd.models import build_model, load_model, model_record

from conftest import assert_same_weights

REPO = Path(__file__).resolve().parents[1]
SPEC = {"channels": 1, "image_size": 32, "num_classes": 4, "mean": [0.5], "std": [0.5]}


def child_env() -> dict[str, str]:
    """A CPU-only, single-threaded environment for `dfkd` subprocesses (this checkout first)."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": ""}


def dfkd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfkd.cli", *map(str, args)], env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_error(result: subprocess.CompletedProcess, *names: str) -> str:
    """Exit 2, a one-line message on stderr naming each of `names`, no traceback."""
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(err.splitlines()) == 1, result.stderr
    assert err.startswith("dfkd "), err
    for name in names:
        assert name in err, (name, err)
    return err


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def teacher_record(arch: str = "lenet5", seed: int = 0, num_classes: int = 4) -> dict:
    torch.manual_seed(seed)
    model = build_model(arch, 1, num_classes, 32)
    return model_record(model, arch, 1, num_classes, 32, [0.5], [0.5], {"stage": "test"})


def save_teacher(path: Path, arch: str = "lenet5", seed: int = 0) -> Path:
    save_torch(path, teacher_record(arch, seed))
    return path


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# ---------------------------------------------------------------------------- a tiny world
def student(**block) -> dict:
    return {"arch": "lenet5_half", "epochs": 4, "batch_size": 64, "optimizer": {"name": "adam", "lr": 3e-3},
            "schedule": "onecycle", "temperature": 4.0, "augment": {"flip": True, "translate": 0.1},
            "seed": 1, "amp": False, **block}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A lenet5 teacher with seeded random weights, two sources, a test split, a manifest."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    files = {}
    for name, n in (("real", 200), ("noise", 120), ("test", 64)):
        arrays = {"images": rng.integers(0, 256, (n, 1, 32, 32), dtype=np.uint8)}
        if name == "test":
            arrays["labels"] = rng.integers(0, 4, n).astype(np.int64)
        files[name] = root / "data" / f"{name}.h5"
        write_h5(files[name], arrays, {"stage": "test"})
    teacher = save_teacher(root / "teacher" / "model.pt")
    frame = pd.DataFrame({
        "source": ["real"] * 160 + ["noise"] * 96,
        "index": np.concatenate([rng.integers(0, 200, 160), rng.permutation(120)[:96]]).astype(np.int64),
        "label": rng.integers(0, 4, 256).astype(np.int64), "confidence": rng.random(256).astype(np.float32),
    })
    manifest = root / "transfer" / "set.parquet"
    write_parquet(manifest, frame, {"stage": "test"})
    return {"root": root, "files": files, "teacher": teacher, "manifest": manifest}


def distill_args(world: dict, params: dict, out_dir: Path) -> list[str]:
    return ["distill", "--threads", "1", "--teacher", world["teacher"], "--manifest", world["manifest"],
            "--data", world["files"]["real"], world["files"]["noise"], "--test", world["files"]["test"],
            "--params", json.dumps(params), "--out-dir", out_dir]


def distill_here(world: dict, params: dict, out_dir: Path, **kwargs) -> dict:
    """distill_student in this process, on the CPU (what the CLI runs)."""
    data = {name: world["files"][name] for name in ("real", "noise")}
    return distill_student(world["teacher"], world["manifest"], data, None, world["files"]["test"],
                           params, out_dir, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory) -> Path:
    """An uninterrupted distillation (in this process, one thread, CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference")
    distill_here(world, {**SPEC, "student": student()}, out)
    torch.set_num_threads(threads)
    return out / "model.pt"


# ---------------------------------------------------------------------------- 1. real kills
def wait_for(path: Path, child: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while not path.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_distill_killed_for_real_resumes_bitwise(world, reference, tmp_path, sig):
    """`dfkd distill` in a subprocess gets a real signal once its first checkpoint exists; a
    fresh `dfkd distill` resumes it and ends with the same weights as an uninterrupted run."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "dfkd.cli", *map(str, distill_args(world, {**SPEC, "student": student()}, out))]
    child = subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(out / "checkpoint.pt", child)
    assert child.poll() is None, "dfkd distill ended before it could be killed:\n" + child.communicate()[0]
    child.send_signal(sig)
    output = child.communicate(timeout=60)[0]
    if sig == signal.SIGKILL:
        assert child.returncode == -signal.SIGKILL, output
    else:  # saved at a step boundary, then exit 143 (Snakemake retries; the retry resumes)
        assert child.returncode == 143, output
        assert "SIGTERM; saved" in output and "Traceback" not in output, output
    assert not (out / "model.pt").exists() and not (out / "metrics.json").exists()
    progress = load_torch(out / "checkpoint.pt")["progress"]  # a complete, loadable checkpoint
    assert 1 <= progress["epoch"] < student()["epochs"]

    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from" in done.stdout, done.stdout
    assert_same_weights(reference, out / "model.pt")
    assert len(read_json(out / "metrics.json")["provenance"]["inputs"]) == 5  # teacher, manifest, test, 2 data
    if sig == signal.SIGTERM:  # (a SIGKILL landing inside a write may leave its temp file: harmless)
        assert not [name for name in listing(out) if name.endswith(".tmp")], listing(out)


# ---------------------------------------------------------------------------- 2. other arch, truncated torch files
def test_model_file_with_weights_of_another_arch_is_refused(world, tmp_path, capsys):
    from dfkd import cli

    record = teacher_record("lenet5_half")
    record["arch"] = "lenet5"  # says lenet5, holds lenet5_half's weights
    path = tmp_path / "model.pt"
    save_torch(path, record)
    with pytest.raises(DfkdError, match=r"model\.pt: its weights do not fit arch 'lenet5'.*size mismatch") as refused:
        load_model(path)
    assert str(path) in str(refused.value)
    out = tmp_path / "f.h5"
    assert cli.main(["features", "--model", str(path), "--data", str(world["files"]["real"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err and len(err.splitlines()) == 1, err
    assert listing(tmp_path) == ["model.pt"]


def test_checkpoint_of_another_arch_is_refused_or_replaced(world, tmp_path):
    distill_here(world, {**SPEC, "student": student(epochs=1)}, tmp_path)
    other = {**SPEC, "student": student(epochs=1, arch="lenet5_quarter")}
    with pytest.raises(DfkdError, match=r"checkpoint\.pt belongs to a different run.*lenet5_half' -> 'lenet5_quarter'"):
        distill_here(world, other, tmp_path)
    distill_here(world, other, tmp_path, fresh_on_mismatch=True)  # what the CLI (Snakemake) does
    assert load_model(tmp_path / "model.pt")[1]["arch"] == "lenet5_quarter"


def test_checkpoint_holding_weights_of_another_arch_is_refused(world, tmp_path):
    """Same identity, foreign weights (a hand-copied file, or an arch whose definition changed)."""
    params = {**SPEC, "student": student(epochs=1)}
    distill_here(world, params, tmp_path)
    model_bytes = (tmp_path / "model.pt").read_bytes()
    state = load_torch(tmp_path / "checkpoint.pt")
    state["model"] = teacher_record("lenet5")["state_dict"]
    save_torch(tmp_path / "checkpoint.pt", state)
    with pytest.raises(DfkdError, match=r"checkpoint\.pt cannot be resumed.*lenet5_half.*size mismatch") as refused:
        distill_here(world, params, tmp_path)
    assert str(tmp_path / "checkpoint.pt") in str(refused.value) and "\n" not in str(refused.value)
    assert (tmp_path / "model.pt").read_bytes() == model_bytes


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_model_and_checkpoint_files_are_refused(world, reference, tmp_path, fraction):
    model = save_teacher(tmp_path / "model.pt")
    truncate(model, fraction)
    for load in (load_torch, load_model):
        with pytest.raises(DfkdError, match="truncated") as refused:
            load(model)
        assert str(model) in str(refused.value) and "\n" not in str(refused.value)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(reference.with_name("checkpoint.pt").read_bytes())
    truncate(out / "checkpoint.pt", fraction)
    with pytest.raises(DfkdError, match="truncated") as refused:
        distill_here(world, {**SPEC, "student": student()}, out)
    assert str(out / "checkpoint.pt") in str(refused.value) and "\n" not in str(refused.value)
    assert listing(out) == ["checkpoint.pt"]


@pytest.mark.slow
def test_cli_features_on_a_truncated_teacher_exits_2_cleanly(world, tmp_path):
    teacher = tmp_path / "teacher" / "model.pt"
    teacher.parent.mkdir()
    teacher.write_bytes(world["teacher"].read_bytes())
    truncate(teacher)
    out = tmp_path / "features" / "real.h5"
    out.parent.mkdir()
    result = dfkd("features", "--threads", "1", "--model", teacher, "--data", world["files"]["real"], "--out", out)
    assert_clean_error(result, str(teacher), "truncated")
    assert listing(out.parent) == []


# ---------------------------------------------------------------------------- 3. corrupt labels parquet
def write_labels(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"index": np.arange(n, dtype=np.int64), "label": rng.integers(0, 4, n).astype(np.int64),
                          "confidence": rng.random(n).astype(np.float32)})
    write_parquet(path, frame, {"stage": "test"})


@pytest.mark.parametrize("damage", ["truncated", "garbage", "total_like"])
def test_cli_assemble_refuses_a_corrupt_labels_file_and_keeps_the_old_manifest(tmp_path, damage):
    from dfkd.stages.balance import assemble_files

    labels = tmp_path / "labels"
    write_labels(labels / "base.parquet", 80, 0)
    write_labels(labels / "extra.parquet", 60, 1)
    out, counts = tmp_path / "transfer" / "set.parquet", tmp_path / "transfer" / "set.counts.csv"
    assemble_files([labels / "base.parquet", labels / "extra.parquet"], 4, out, counts, total=60, seed=0)
    before = {path: path.read_bytes() for path in (out, counts)}
    if damage == "garbage":
        (labels / "extra.parquet").write_bytes(b"PAR1" + os.urandom(300) + b"PAR1")
    else:
        truncate(labels / "extra.parquet")
    bad = labels / "extra.parquet"
    args = ["assemble", "--labels", labels / "base.parquet", *([] if damage == "total_like" else [bad]),
            "--num-classes", "4", "--out", out, "--counts", counts, "--seed", "0",
            *(["--total-like", bad] if damage == "total_like" else ["--total", "60"])]
    result = dfkd(*args)
    assert_clean_error(result, str(bad), "parquet")
    assert {path: path.read_bytes() for path in (out, counts)} == before
    assert listing(out.parent) == ["set.counts.csv", "set.parquet"]


# ---------------------------------------------------------------------------- 4. images of the wrong dtype or rank
@pytest.mark.parametrize("images", [
    np.zeros((5, 1, 32, 32), np.float32),  # wrong dtype
    np.zeros((5, 32, 32), np.uint8),  # wrong rank (no channel axis)
    np.zeros((5, 1, 1, 32, 32), np.uint8),  # wrong rank (an extra axis)
], ids=["float32", "rank3", "rank5"])
def test_features_refuse_images_of_the_wrong_dtype_or_rank(world, tmp_path, images):
    data = tmp_path / "data" / "bad.h5"
    write_h5(data, {"images": images}, None)
    out = tmp_path / "features" / "bad.h5"
    with pytest.raises(DfkdError) as refused:
        extract_features(world["teacher"], data, out)
    message = str(refused.value)
    assert f"{data}:/images" in message and "uint8 [N, 1, 32, 32]" in message, message
    assert not out.exists() and (not out.parent.exists() or listing(out.parent) == [])


@pytest.mark.parametrize("split", ["real", "test"])
@pytest.mark.parametrize("dtype, shape, expected", [
    (np.float32, (200, 1, 32, 32), r"dtype float32; expected one of \['uint8'\]"),
    (np.uint8, (200, 32, 32), r"shape \(200, 32, 32\); expected 4 dimensions"),
], ids=["float32", "rank3"])
def test_distill_refuses_data_of_the_wrong_dtype_or_rank(world, tmp_path, split, dtype, shape, expected):
    files = {name: world["files"][name] for name in ("real", "noise", "test")}
    files[split] = tmp_path / f"{split}.h5"
    write_h5(files[split], {"images": np.zeros(shape, dtype), "labels": np.zeros(shape[0], np.int64)}, None)
    params = {**SPEC, "student": student(epochs=1)}
    with pytest.raises(DfkdError, match=expected) as refused:
        distill_student(world["teacher"], world["manifest"], {"real": files["real"], "noise": files["noise"]},
                        None, files["test"], params, tmp_path / "out")
    assert f"{files[split]}:/images" in str(refused.value)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- 5. atomic writes
class Boom(RuntimeError):
    pass


def assert_untouched(folder: Path, destination: Path, before: bytes | None) -> None:
    """No temp file left in `folder`; `destination` is as it was (absent, or the same bytes)."""
    if before is None:
        assert listing(folder) == [], listing(folder)
    else:
        assert listing(folder) == [destination.name], listing(folder)
        assert destination.read_bytes() == before


@pytest.fixture(params=["new", "existing"])
def destination(request, tmp_path):
    """Where a failing write goes: a fresh path, or one holding an older artifact."""
    def make(name: str, write_old) -> tuple[Path, bytes | None]:
        path = tmp_path / "out" / name
        if request.param == "new":
            path.parent.mkdir()
            return path, None
        write_old(path)
        return path, path.read_bytes()
    return make


def test_h5writer_interrupted_leaves_nothing(destination):
    path, before = destination("f.h5", lambda p: write_h5(p, {"features": np.ones((3, 2), np.float32)},
                                                          {"stage": "old"}))
    with pytest.raises(Boom):
        with H5Writer(path, {"stage": "new"}) as writer:
            dataset = writer.create("features", (100, 4), np.float32)
            dataset[:50] = 1.0
            raise Boom("killed half way")
    assert_untouched(path.parent, path, before)


def test_write_h5_failing_on_a_later_array_leaves_nothing(destination):
    path, before = destination("d.h5", lambda p: write_h5(p, {"images": np.zeros((2, 1, 4, 4), np.uint8)}, None))
    arrays = {"images": np.ones((4, 1, 4, 4), np.uint8), "labels": np.array([object(), object()], dtype=object)}
    with pytest.raises(TypeError):  # HDF5 cannot store Python objects: fails after `images` is written
        write_h5(path, arrays, {"stage": "new"})
    assert_untouched(path.parent, path, before)


def test_write_parquet_interrupted_leaves_nothing(destination, monkeypatch):
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"index": np.arange(1000), "label": np.arange(1000) % 4})
    path, before = destination("m.parquet", lambda p: write_parquet(p, frame.head(3), {"stage": "old"}))
    real_write = pq.write_table

    def write_then_fail(table, where, **kwargs):
        real_write(table, where, **kwargs)
        truncate(Path(where))  # half a file on disk, as at a crash
        raise Boom("disk full")

    monkeypatch.setattr(pq, "write_table", write_then_fail)
    with pytest.raises(Boom):
        write_parquet(path, frame, {"stage": "new"})
    assert_untouched(path.parent, path, before)


@pytest.mark.parametrize("provenance", [None, {"stage": "new"}], ids=["bare", "provenance"])
def test_write_json_interrupted_leaves_nothing(destination, provenance):
    path, before = destination("metrics.json", lambda p: write_json(p, {"test_accuracy": 0.5}, {"stage": "old"}))
    with pytest.raises(TypeError):  # not JSON-serialisable, after the first keys
        write_json(path, {"a": 1, "b": [1, 2], "z": object()}, provenance)
    assert_untouched(path.parent, path, before)


@pytest.mark.parametrize("failing", ["os.fsync", "os.replace"])
def test_failed_fsync_or_rename_leaves_nothing(destination, monkeypatch, failing):
    path, before = destination("metrics.json", lambda p: write_json(p, {"test_accuracy": 0.5}, {"stage": "old"}))

    def fail(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(artifacts.os, failing.split(".")[1], fail)
    with pytest.raises(OSError):
        write_json(path, {"test_accuracy": 0.9}, {"stage": "new"})
    monkeypatch.undo()
    assert_untouched(path.parent, path, before)


def test_save_torch_interrupted_leaves_nothing(destination, monkeypatch):
    path, before = destination("model.pt", lambda p: save_torch(p, teacher_record()))
    real_save = torch.save

    def save_then_fail(obj, where, *args, **kwargs):
        real_save(obj, where, *args, **kwargs)
        if isinstance(where, (str, Path)):  # (save_torch serialises to memory, then writes the bytes)
            truncate(Path(where))
        raise Boom("killed while saving")

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(Boom):
        save_torch(path, teacher_record(seed=1))
    monkeypatch.undo()
    assert_untouched(path.parent, path, before)
    if before is not None:
        load_model(path)  # the older model still loads


# ---------------------------------------------------------------------------- 6. safe loading
class Payload:
    """Unpickling this runs code: it creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


class Plain:
    def __init__(self):
        self.value = 1


@pytest.mark.parametrize("kind", ["code", "object"])
def test_load_torch_refuses_pickled_objects(tmp_path, capsys, kind):
    from dfkd import cli

    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    record = teacher_record()
    record["extra"] = Payload(marker) if kind == "code" else Plain()
    torch.save(record, path)
    for load in (load_torch, load_model):
        with pytest.raises(DfkdError, match=r"holds a pickled Python object .*weights_only=True") as refused:
            load(path)
        assert str(path) in str(refused.value)
        assert ("(exec)" if kind == "code" else "Plain") in str(refused.value)
    assert not marker.exists()
    # the CLI says so in one line
    assert cli.main(["features", "--model", str(path), "--data", "x.h5", "--out", str(tmp_path / "f.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not marker.exists() and not (tmp_path / "f.h5").exists()
    if kind == "code":  # the payload is live: an unsafe load would have run it
        torch.load(path, weights_only=False)
        assert marker.exists()
