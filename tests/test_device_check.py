"""benchmarks/device_check.sh: the prepared GPU check, run in its --cpu mode (tiny sizes), and
the README references it compares accuracies against."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import FMNIST, REPO, requires_fmnist

STAGES = ["tiny_workflow", "startup", "prepare", "teacher", "features_patches", "features_train", "label_assemble",
          "student_flips", "student_cutmix", "hausdorff", "hausdorff_cpu"]


def load_device_check():
    spec = importlib.util.spec_from_file_location("device_check", REPO / "benchmarks" / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_references_are_found():
    """The teacher's accuracy and each set's mean and 2 sd, as the published main table states them."""
    check = load_device_check()
    refs = check.cpu_references(check.REFERENCE_TABLE.read_text())
    assert refs["teacher"][1] is None and 50 < refs["teacher"][0] < 100
    mean, spread = refs["natural"]
    assert 50 < mean < 100 and 0 < spread < 10
    assert set(refs) >= {"real", "noise", "noise_bal", "synthetic", "synthetic_bal", "natural", "natural_bal"}


def test_verdict_flags_a_difference_beyond_the_seed_range():
    verdict = load_device_check().verdict
    assert "within" in verdict(0.7555 + 0.0150, (75.55, 1.51))[1] and "2 sd" in verdict(0.75, (75.55, 1.51))[0]
    assert "OUTSIDE" in verdict(0.7555 - 0.0152, (75.55, 1.51))[1]
    assert verdict(0.9, (90.51, None))[1].startswith("-0.51 pts")
    assert verdict(0.9, None) == ("-", "no CPU reference")


@pytest.mark.slow
@requires_fmnist
def test_device_check_cpu_mode(tmp_path):
    """The whole script, as the GPU machine would run it, at tiny sizes on the CPU: every stage
    runs, and the table, JSON and logs hold sane values."""
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "device_check.sh"), "--cpu", "--cores", "2", "--threads", "1",
         "--work", str(tmp_path / "work"), "--data", str(FMNIST)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((out / "device_check.json").read_text())
    rows = {row["stage"]: row for row in report["stages"]}
    assert list(rows) == STAGES and report["mode"] == "cpu"
    for name, row in rows.items():
        if name == "student_cutmix" and row["status"] == "not available":
            continue
        assert row["status"] == "ok", row
        assert row["seconds"] > 0 and row.get("peak_gpu_mib") is None, row  # no CUDA in --cpu mode
    for name in ("prepare", "teacher", "features_patches", "features_train", "student_flips", "hausdorff"):
        assert rows[name]["images_per_second"] > 0, rows[name]
    for name in ("tiny_workflow", "teacher", "student_flips"):
        assert 0.05 < rows[name]["accuracy"] <= 1, rows[name]  # above chance (0.1) is not promised at 1 epoch
        assert rows[name]["device"] == "cpu"
    assert rows["student_flips"]["teacher_logits"] == "per_view"
    assert rows["teacher"]["tflops"] > 0 and rows["teacher"]["fraction_of_peak"] is None
    assert rows["hausdorff"]["hausdorff"] == pytest.approx(rows["hausdorff_cpu"]["hausdorff"], rel=1e-9)
    assert "2000 x 2000" in rows["hausdorff"]["note"]
    table = (out / "device_check.md").read_text()
    assert all(f"| {name} |" in table for name in STAGES)
    assert "| stage | status | wall s | images/s | peak GPU MiB |" in table
    assert (out / "device_check.log").read_text().count("| teacher |") == 1  # the wrapper kept the console
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert "logs/teacher.log" in names and any(n.endswith("teacher/metrics.json") for n in names)
