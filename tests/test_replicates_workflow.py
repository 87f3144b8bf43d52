"""Seeds as replicates: a second seed on the finished tiny run adds only its own runs, which
differ from seed 0's only in what a seed changes, and the summary aggregates both seeds."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import requires_fmnist, snakemake, tiny_config

pytestmark = [pytest.mark.slow, requires_fmnist]


@pytest.fixture(scope="module")
def two_seeds(tiny_run, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("seeds") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["seeds"] = [0, 1]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(workdir)
    return workdir


def provenance(path):
    if path.suffix == ".json":
        return json.loads(path.read_text())["provenance"]
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[b"dfkd_provenance"])


def differences(a, b, prefix=""):
    """Dotted keys where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def test_two_seeds_differ_only_in_what_the_seed_changes(two_seeds):
    target = two_seeds / "results" / "fmnist"
    # the student: the same config but its seed, the same teacher, its own transfer set
    s0 = provenance(target / "students" / "natural_bal" / "seed0" / "metrics.json")
    s1 = provenance(target / "students" / "natural_bal" / "seed1" / "metrics.json")
    assert differences(s0["config"], s1["config"]) == ["student.seed"]
    assert s1["config"]["student"]["seed"] == s0["config"]["student"]["seed"] + 1
    assert s0["inputs"]["teacher"]["sha256"] == s1["inputs"]["teacher"]["sha256"]
    assert s0["inputs"]["manifest"]["path"].endswith("natural_bal/seed0.parquet")
    assert s1["inputs"]["manifest"]["path"].endswith("natural_bal/seed1.parquet")
    # the transfer set: the same labels files, another seed of its random picks
    m0, m1 = (target / "transfer" / "natural_bal" / f"seed{k}.parquet" for k in (0, 1))
    p0, p1 = provenance(m0), provenance(m1)
    assert {k: v["sha256"] for k, v in p0["inputs"].items()} == {k: v["sha256"] for k, v in p1["inputs"].items()}
    assert not pd.read_parquet(m0)[["source", "index"]].equals(pd.read_parquet(m1)[["source", "index"]])
    # the teacher and the sources were not touched by the new seed
    assert (target / "teacher" / "model.pt").stat().st_mtime < (target / "students" / "natural_bal" / "seed1" / "model.pt").stat().st_mtime


def test_seed_zero_is_not_rerun(two_seeds, tiny_run):
    for relative in ("students/natural_bal/seed0/model.pt", "transfer/noise/seed0.parquet", "teacher/model.pt"):
        before = (tiny_run / "results" / "fmnist" / relative).read_bytes()
        assert (two_seeds / "results" / "fmnist" / relative).read_bytes() == before, relative


def test_summary_aggregates_both_seeds(two_seeds):
    target = two_seeds / "results" / "fmnist"
    summary = pd.read_csv(target / "tables" / "summary.csv").set_index("transfer_set")
    for name in tiny_config()["transfer_sets"]:
        values = [100 * json.loads((target / "students" / name / f"seed{k}" / "metrics.json").read_text())["test_accuracy"]
                  for k in (0, 1)]
        assert summary.loc[name, "accuracy_n"] == 2
        assert summary.loc[name, "accuracy_mean"] == pytest.approx(sum(values) / 2)
        assert summary.loc[name, "accuracy_sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
        assert [summary.loc[name, f"accuracy_seed{k}"] for k in (0, 1)] == pytest.approx(values)
    markdown = (target / "tables" / "summary.md").read_text()
    assert "mean ± sd, n=2" in markdown
    assert "synthetic_bal < natural_bal in accuracy (balanced)" in markdown and "n = 2 paired seeds" in markdown


def test_the_audit_of_a_replicated_run_is_all_ok(two_seeds):
    result = subprocess.run([sys.executable, "-m", "dfkd.cli", "audit", "results", "--json"],
                            capture_output=True, text=True, cwd=two_seeds)
    entries = json.loads(result.stdout)
    assert result.returncode == 0, [e for e in entries if e["status"] != "ok"]
    paths = {e["path"].split("results/", 1)[-1] for e in entries}
    assert {"fmnist/students/noise/seed1/metrics.json", "fmnist/transfer/noise/seed1.parquet",
            "fmnist/distance/noise/seed1.json", "fmnist/students/noise/seed0/metrics.json"} <= paths
