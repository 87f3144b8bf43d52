"""The whole DAG on a tiny config: Snakemake runs every stage and the artifacts are consistent."""
import json

import h5py
import pandas as pd
import pytest

from conftest import requires_fmnist, snakemake, tiny_config

pytestmark = [pytest.mark.slow, requires_fmnist]


@pytest.fixture(scope="module")
def finished_run(tiny_run):
    return tiny_run


def test_every_stage_produced_its_artifacts(finished_run):
    target = finished_run / "results" / "fmnist"
    with h5py.File(target / "data" / "train.h5") as handle:
        assert handle["images"].shape == (3000, 1, 32, 32) and handle["images"].dtype == "uint8"
        assert "dfkd_provenance" in handle.attrs
    with h5py.File(target / "features" / "noise.h5") as handle:
        assert handle["features"].shape[0] == 500 and handle["logits"].shape == (500, 10)
    labels = pd.read_parquet(target / "labels" / "patches.parquet")
    assert list(labels.columns[:3]) == ["index", "label", "confidence"]
    manifest = pd.read_parquet(target / "transfer" / "synthetic_bal" / "seed0.parquet")
    assert not manifest.duplicated(["source", "index"]).any()
    counts = pd.read_csv(target / "transfer" / "synthetic_bal" / "seed0.counts.csv")
    assert counts["after"].sum() == len(manifest) and (counts["after"] <= 60).all()
    metrics = json.loads((target / "students" / "natural_bal" / "seed0" / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and "provenance" in metrics
    distance = json.loads((target / "distance" / "real" / "seed0.json").read_text())
    assert distance["directed_ab"] == 0.0  # the real set is a subset of the training set
    summary = pd.read_csv(target / "tables" / "summary.csv")
    assert list(summary["transfer_set"]) == list(tiny_config()["transfer_sets"])
    assert (target / "figures" / "class_counts_noise.png").stat().st_size > 1000


def test_summary_numbers_come_from_the_metrics_files(finished_run):
    target = finished_run / "results" / "fmnist"
    summary = pd.read_csv(target / "tables" / "summary.csv").set_index("transfer_set")
    for name in tiny_config()["transfer_sets"]:
        metrics = json.loads((target / "students" / name / "seed0" / "metrics.json").read_text())
        distance = json.loads((target / "distance" / name / "seed0.json").read_text())
        assert summary.loc[name, "accuracy_mean"] == pytest.approx(100 * metrics["test_accuracy"])
        assert summary.loc[name, "accuracy_seed0"] == pytest.approx(100 * metrics["test_accuracy"])
        assert summary.loc[name, "accuracy_n"] == 1
        assert summary.loc[name, "hausdorff_mean"] == pytest.approx(distance["hausdorff"])


def test_a_second_run_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, "--dry-run", "--quiet")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_audit_of_a_finished_run_is_ok_and_names_a_hand_edit(finished_run, tmp_path):
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "results"
    shutil.copytree(finished_run / "results", copy)

    def audit(*args):
        return subprocess.run([sys.executable, "-m", "dfkd.cli", "audit", str(copy), *args],
                              capture_output=True, text=True, cwd=tmp_path)

    clean = audit("--json")
    assert clean.returncode == 0, clean.stdout[-3000:]
    assert {entry["status"] for entry in json.loads(clean.stdout)} == {"ok"}

    with h5py.File(copy / "fmnist" / "data" / "noise.h5", "r+") as handle:
        handle["images"][0, 0, 0, 0] ^= 1  # one pixel, by hand
    edited = audit("--json")
    assert edited.returncode == 1
    by_path = {entry["path"]: entry["status"] for entry in json.loads(edited.stdout)}
    status = {path.split("results/", 1)[-1]: value for path, value in by_path.items()}
    assert status["fmnist/data/noise.h5"] == "modified"
    downstream = ["fmnist/features/noise.h5", "fmnist/labels/noise.parquet", "fmnist/transfer/noise/seed0.parquet",
                  "fmnist/students/noise/seed0/metrics.json", "fmnist/students/noise/seed0/model.pt", "fmnist/distance/noise/seed0.json"]
    assert all(status[path] == "stale" for path in downstream), {p: status[p] for p in downstream}
    assert status["fmnist/teacher/model.pt"] == "ok" and status["fmnist/distance/natural_bal/seed0.json"] == "ok"
    assert status["fmnist_b/data/noise.h5"] == "ok"  # the other target's copy of the source
