"""Faults that are not aimed at one stage: real kills anywhere, a full disk, damaged artifacts.

The slow tests run benchmarks/bench_faults.py's measurement on its small workflow (every stage):
8 SIGKILLs of Snakemake's whole process group at seeded random moments over every stage, each
followed by `snakemake --rerun-incomplete`, end equal to an uninterrupted run, audit ok, with no
file left over; results on a full tmpfs stop with one line naming the file and resume equal after
space is freed; damaged artifacts are named by the audit and refused by the next stage.

The fast tests pin the package fixes those runs needed: a full disk is one DfkdError naming the
artifact for every writer (HDF5 used to crash the process), a killed writer's temporary file is
removed by the next write, stages refuse an input whose content no longer matches its recorded
digest, and a dead Snakemake's lock is removed (only then).
"""
from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfkd.io import artifacts
from dfkd import cli
from dfkd.io.artifacts import read_json, sweep_dead_temporaries, write_h5, write_json, write_parquet
from dfkd.tools.audit import run_audit
from dfkd.errors import DfkdError
from dfkd.io.workflow_lock import clear_stale_lock

from conftest import requires_fmnist

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_faults", REPO / "benchmarks" / "bench_faults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line(err: str, *names: str) -> str:
    err = err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err


# ---------------------------------------------------------------------------- a full disk, per writer
def test_a_full_disk_is_one_error_naming_the_artifact(tmp_path, monkeypatch):
    """ENOSPC anywhere inside an atomic write: a DfkdError naming the destination, no temp file."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DfkdError, match=r"metrics\.json: no space left on device") as refused:
        with artifacts.atomic_path(out / "metrics.json") as tmp:
            tmp.write_text("{")
            full()
    assert str(out / "metrics.json") in str(refused.value) and "\n" not in str(refused.value)
    assert os.listdir(out) == []
    monkeypatch.setattr(artifacts.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EDQUOT, "quota")))
    with pytest.raises(DfkdError, match="disk quota exceeded"):
        write_json(out / "m.json", {"a": 1}, {"stage": "t"})
    assert os.listdir(out) == []


WRITERS = r"""
import os, sys, numpy as np, pandas as pd, torch
from dfkd.io.artifacts import H5Writer, save_torch, write_h5, write_json, write_parquet
from dfkd.errors import DfkdError
folder = sys.argv[1]

def write_h5writer(path):
    with H5Writer(path, {"stage": "t"}) as writer:
        writer.create("features", (300000,), np.float64)[:] = np.random.rand(300000)

writers = {
    "a.h5": lambda p: write_h5(p, {"x": np.random.rand(300000)}, {"stage": "t"}),
    "b.h5": write_h5writer,
    "c.pt": lambda p: save_torch(p, {"w": torch.rand(300000), "provenance": "{}"}),
    "d.parquet": lambda p: write_parquet(p, pd.DataFrame({"x": np.random.rand(300000)}), {"stage": "t"}),
    "e.json": lambda p: write_json(p, {"x": list(range(300000))}, {"stage": "t"}),
}
for name, write in writers.items():
    fd = os.open(f"{folder}/filler", os.O_WRONLY | os.O_CREAT)  # fill the disk, then free 40 KB
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError:
        pass
    os.close(fd)
    os.truncate(f"{folder}/filler", os.path.getsize(f"{folder}/filler") - 40960)
    try:
        write(f"{folder}/{name}")
        print(name, "WROTE")
    except DfkdError as exc:
        print(name, "|", exc)
    print(name, "LEFT", sorted(os.listdir(folder)))
    os.unlink(f"{folder}/filler")
"""


def test_every_writer_on_a_really_full_disk_fails_cleanly(tmp_path):
    """A real full tmpfs: HDF5 (write_h5, H5Writer), torch, parquet and JSON writes each end with
    one DfkdError naming the file, leave nothing, and the process exits normally (HDF5 2.0
    crashed it with a segmentation fault after ENOSPC, and torch said only "unexpected pos")."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) not found")
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = tmp_path / "writers.py"
    script.write_text(WRITERS)
    inner = f"mount -t tmpfs -o size=2m tmpfs {mount} || exit 77; exec {sys.executable} {script} {mount}"
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", inner],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""})
    if done.returncode == 77 or "unshare:" in done.stderr:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for name in ("a.h5", "b.h5", "c.pt", "d.parquet", "e.json"):
        error = next(line for line in lines if line.startswith(f"{name} |"))
        assert f"{mount}/{name}: no space left on device" in error and "re-run" in error, error
        assert f"{name} LEFT ['filler']" in lines, lines


# ---------------------------------------------------------------------------- temporary files of killed writers
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    host = socket.gethostname()
    dead, live = dead_pid(), os.getppid()
    names = {
        "dead": f".x.h5.{dead}@{host}.ab12cd.tmp",  # a SIGKILLed writer's
        "live": f".x.h5.{live}@{host}.ef34gh.tmp",  # a writer still running
        "other_host": f".x.h5.{dead}@not-{host}.ij56kl.tmp",  # on another node of a shared disk
        "other_file": f".y.h5.{dead}@{host}.mn78op.tmp",  # another artifact's
        "old_style": ".x.h5.qr90st.tmp",  # an older dfkd's (no owner recorded)
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"half")
    write_h5(tmp_path / "x.h5", {"x": np.arange(3)}, {"stage": "t"})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert names["dead"] not in left
    assert sorted(left) == sorted(["x.h5", *(n for k, n in names.items() if k != "dead")])
    assert sweep_dead_temporaries(tmp_path / "x.h5") == []  # nothing more to remove


# ---------------------------------------------------------------------------- damaged inputs
@pytest.fixture
def small_chain(tmp_path):
    """A features file, its labels, a teacher model: written by dfkd, then damaged by the tests."""
    from dfkd.io.artifacts import save_torch
    from dfkd.stages.labels import label_source
    from dfkd.models import build_model, model_record

    rng = np.random.default_rng(0)
    features = tmp_path / "features" / "noise.h5"
    write_h5(features, {"features": rng.random((500, 16), dtype=np.float32),
                        "logits": rng.random((500, 4), dtype=np.float32)}, {"stage": "features"})
    labels = tmp_path / "labels" / "noise.parquet"
    label_source(features, labels)
    model = tmp_path / "teacher" / "model.pt"
    save_torch(model, model_record(build_model("lenet5", 1, 4, 32), "lenet5", 1, 4, 32, [0.5], [0.5], {"stage": "t"}))
    return {"features": features, "labels": labels, "model": model}


def audit_statuses(root: Path) -> dict[str, str]:
    text, _ = run_audit(root, as_json=True)
    return {entry["path"]: entry["status"] for entry in json.loads(text)}


def flip_data_bytes(path: Path, rng) -> None:
    import h5py

    with h5py.File(path) as handle:
        info = handle["features"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    for offset in rng.choice(np.arange(info.byte_offset, info.byte_offset + info.size), 3, replace=False):
        data[offset] ^= 0x10  # a float's exponent or mantissa: still a valid number
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_features_file_stop_the_next_stage(small_chain, tmp_path, capsys):
    features = small_chain["features"]
    before = small_chain["labels"].read_bytes()
    flip_data_bytes(features, np.random.default_rng(1))
    import h5py  # the file still reads: the numbers are silently wrong without the digest check

    with h5py.File(features) as handle:
        assert handle["features"].shape == (500, 16)
    assert cli.main(["label", "--features", str(features), "--out", str(small_chain["labels"])]) == 2
    err = one_line(capsys.readouterr().err, str(features), "is corrupt", "Delete it and re-run")
    assert err.startswith("dfkd label: error:")
    assert small_chain["labels"].read_bytes() == before
    assert audit_statuses(tmp_path)[str(features)] == "modified"


def test_a_truncated_parquet_and_a_zeroed_model_stop_the_next_stage(small_chain, tmp_path, capsys):
    labels, model = small_chain["labels"], small_chain["model"]
    labels.write_bytes(labels.read_bytes()[: labels.stat().st_size // 2])
    model.write_bytes(bytes(model.stat().st_size))
    out = tmp_path / "transfer" / "set.parquet"
    assert cli.main(["assemble", "--labels", str(labels), "--num-classes", "4", "--total", "10", "--out", str(out)]) == 2
    err = one_line(capsys.readouterr().err, str(labels))
    assert "delete it and re-run" in err.lower(), err
    assert cli.main(["features", "--model", str(model), "--data", str(small_chain["features"]),
                     "--out", str(tmp_path / "f.h5")]) == 2
    err = one_line(capsys.readouterr().err, str(model), "not a zip archive", "00 00 00 00")
    assert "delete it and re-run" in err.lower(), err
    assert not out.exists() and not (tmp_path / "f.h5").exists()
    statuses = audit_statuses(tmp_path)
    assert statuses[str(labels)] == "unreadable" and statuses[str(model)] == "unreadable", statuses


def test_a_changed_number_in_a_json_artifact_is_refused_where_stages_read_it(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"test_accuracy": 0.8125}, {"stage": "distill"})
    assert read_json(path)["test_accuracy"] == 0.8125
    path.write_text(path.read_text().replace("0.8125", "0.9125"))  # valid JSON, a wrong number
    with pytest.raises(DfkdError, match=r"metrics\.json is corrupt.*Delete it and re-run"):
        read_json(path)
    assert read_json(path, verify=False)["test_accuracy"] == 0.9125  # audit, show, compare look at it
    assert audit_statuses(tmp_path) == {str(path): "modified"}


# ---------------------------------------------------------------------------- Snakemake's lock
def lock_dir(tmp_path: Path, *owners: str) -> Path:
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    for name in ("0.input.lock", "0.output.lock"):
        (tmp_path / ".snakemake" / "locks" / name).write_text("results/x\n")
    (tmp_path / ".snakemake" / "dfkd_owners").mkdir()
    for owner in owners:
        (tmp_path / ".snakemake" / "dfkd_owners" / owner).touch()
    return tmp_path / ".snakemake" / "locks"


def test_the_lock_of_a_killed_snakemake_is_removed(tmp_path):
    host = socket.gethostname()
    locks = lock_dir(tmp_path, f"{dead_pid()}@{host}")
    message = clear_stale_lock(tmp_path)
    assert message and "removed Snakemake's lock" in message and "is gone" in message
    assert list(locks.iterdir()) == []
    owners = sorted(p.name for p in (tmp_path / ".snakemake" / "dfkd_owners").iterdir())
    assert owners == [f"{os.getpid()}@{host}"]  # this process, the next owner


@pytest.mark.parametrize("owner", ["live", "other_host", "none"])
def test_a_lock_that_may_be_live_is_left_alone(tmp_path, owner):
    host = socket.gethostname()
    records = {"live": [f"{dead_pid()}@{host}", f"{os.getppid()}@{host}"],
               "other_host": [f"{dead_pid()}@{host}", f"{dead_pid()}@not-{host}"], "none": []}[owner]
    locks = lock_dir(tmp_path, *records)
    assert clear_stale_lock(tmp_path, will_lock=False) is None
    assert sorted(p.name for p in locks.iterdir()) == ["0.input.lock", "0.output.lock"]


# ---------------------------------------------------------------------------- the workflow, faulted
@pytest.fixture(scope="module")
def bench():
    return load_bench()


@pytest.fixture(scope="module")
def reference(bench, tmp_path_factory):
    """The small workflow, uninterrupted: (its working folder, its results)."""
    workdir = tmp_path_factory.mktemp("faults") / "reference"
    return workdir, bench.reference_run(workdir)


@pytest.mark.slow
@requires_fmnist
def test_killed_anywhere_eight_times_the_run_ends_as_if_never_killed(bench, reference, tmp_path):
    workdir, results = reference
    kills = bench.kill_campaign(tmp_path / "killed", kills=8, seed=0, seconds=bench.job_seconds(results),
                                say=lambda line: None)
    assert 8 <= kills["kills"] <= 12, kills["records"]  # 8, and up to 4 more while a stage is unhit
    assert set(bench.SCHEDULE) <= set(kills["stages_hit"]), kills["records"]  # every stage, truly hit
    assert kills["escaped"] == 0 and kills["stale_lock_removed"], kills
    compared = bench.compare_trees(results, tmp_path / "killed" / "results")
    assert compared["differences"] == [] and compared["left_over"] == [] and compared["missing"] == [], compared
    assert compared["compared"] >= 35 and compared["by"]["content digest"] >= 15, compared
    statuses = bench.audit(tmp_path / "killed" / "results", tmp_path / "killed")
    assert len(statuses) >= 20 and set(statuses.values()) == {"ok"}, statuses


@pytest.mark.slow
@requires_fmnist
def test_a_full_disk_stops_one_job_cleanly_and_the_rerun_ends_equal(bench, reference, tmp_path):
    _, results = reference
    facts = bench.disk_full(tmp_path / "disk", 3 * 2**20)
    if "skipped" in facts:
        pytest.skip(facts["skipped"])
    assert facts["first_exit"] != 0 and facts["failed_jobs"], facts
    for job in facts["failed_jobs"]:
        assert not job["traceback"], job
        line = job["last_line"]
        assert line.startswith("dfkd ") and ": error: results/fmnist/" in line and "no space left" in line, job
    assert facts["artifacts_after_failure"] >= 1 and facts["not_ok_after_failure"] == {}, facts
    assert facts["hidden_after_failure"] == [], facts
    assert facts["second_exit"] == 0, facts["second_tail"]
    after = bench.compare_trees(results, tmp_path / "disk" / "results_after")
    assert after["differences"] == [] and after["left_over"] == [] and after["missing"] == [], after


@pytest.mark.slow
@requires_fmnist
def test_damaged_artifacts_are_named_refused_and_remade(bench, reference, tmp_path):
    workdir, results = reference
    outcome = bench.damaged_artifacts(workdir, tmp_path / "damaged", seed=0)
    for case in outcome["cases"]:
        assert case["audit"] in ("modified", "unreadable"), case
        assert case["exit"] == 2 and case["output_unchanged"], case
        err = one_line(case["stderr"], f"results/{case['file']}")
        assert "delete it and re-run" in err.lower(), err
    again = bench.compare_trees(results, tmp_path / "damaged" / "results")
    assert again["differences"] == [] and again["left_over"] == [] and again["missing"] == [], again
