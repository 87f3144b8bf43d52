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
    manifest = pd.read_parquet(target / "transfer" / "synthetic_bal.parquet")
    assert not manifest.duplicated(["source", "index"]).any()
    counts = pd.read_csv(target / "transfer" / "synthetic_bal.counts.csv")
    assert counts["after"].sum() == len(manifest) and (counts["after"] <= 60).all()
    metrics = json.loads((target / "students" / "natural_bal" / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and "provenance" in metrics
    distance = json.loads((target / "distance" / "real.json").read_text())
    assert distance["directed_ab"] == 0.0  # the real set is a subset of the training set
    summary = pd.read_csv(target / "tables" / "summary.csv")
    assert list(summary["transfer_set"]) == list(tiny_config()["transfer_sets"])
    assert (target / "figures" / "class_counts_noise.png").stat().st_size > 1000


def test_summary_numbers_come_from_the_metrics_files(finished_run):
    target = finished_run / "results" / "fmnist"
    summary = pd.read_csv(target / "tables" / "summary.csv").set_index("transfer_set")
    for name in tiny_config()["transfer_sets"]:
        metrics = json.loads((target / "students" / name / "metrics.json").read_text())
        distance = json.loads((target / "distance" / f"{name}.json").read_text())
        assert summary.loc[name, "student_accuracy"] == pytest.approx(metrics["test_accuracy"])
        assert summary.loc[name, "hausdorff"] == pytest.approx(distance["hausdorff"])


def test_a_second_run_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, "--dry-run", "--quiet")
    assert "Nothing to be done" in result.stdout + result.stderr
