"""`snakemake all_tables` on the tiny config: every table is built from the run's own files,
student variants are separate runs, and the HTML report holds the tables."""
from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from conftest import requires_fmnist, snakemake

pytestmark = [pytest.mark.slow, requires_fmnist]

STUDY = {
    "targets": ["fmnist"],
    "tables": {
        "main": {"rows": {"real": "real", "noise": "noise", "natural_bal": "natural_bal"}, "variants": ["default", "noaug"]},
        "table1": {"rows": {"2": "t1_k2", "4": "t1_k4"}},
        "table2": {"rows": {"2": "t1_k2"}},
        "table3": {"rows": {"A": "noise", "A+B": "noise_nat", "B": "natural", "B+A": "natural_bal"}, "variants": ["noaug"]},
        "table4": {"rows": {"noise/none": "noise", "noise/natural": "noise_nat"}, "variants": ["noaug"]},
        "table5": {"rows": {"noise": "noise", "synthetic": "synthetic_bal", "natural": "natural_bal"}},
        "class_frequencies": {"rows": {"synthetic": "synthetic_bal", "natural": "natural_bal"}},
        "table9": {"rows": {"noise": "noise", "natural_bal": "natural_bal"}},
    },
}
NEW_SETS = {
    "t1_k2": {"sources": ["train"], "classes": 2, "size": 100},
    "t1_k4": {"sources": ["train"], "classes": 4, "size": 100},
    "noise_nat": {"sources": ["noise", "patches"]},
    "natural": {"sources": ["patches"], "balanced": False},
}


@pytest.fixture(scope="module")
def study_run(tiny_run, tmp_path_factory):
    """A copy of the finished tiny run, with a study declared in its config, built to all_tables."""
    workdir = tmp_path_factory.mktemp("study") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["transfer_sets"].update(NEW_SETS)
    config["targets"]["fmnist"]["sets"] = ["real", "noise", "synthetic_bal", "natural_bal"]  # `all` as before
    config["variants"] = {"noaug": {"augment": {}}}
    config["study"] = STUDY
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    dry = snakemake(workdir, "-n", "all_tables").stdout
    snakemake(workdir, "all_tables")
    return workdir, dry


def test_only_the_study_runs_are_new(study_run):
    _, dry = study_run
    stats = dry.split("Job stats:")[1].split("Reasons")[0]
    counts = {name: int(n) for name, n in re.findall(r"^(\w+)\s+(\d+)$", stats, re.MULTILINE)}
    # students: t1_k2, t1_k4, noise_nat.noaug, natural.noaug, plus the noaug runs of real, noise,
    # natural_bal; nothing of the finished tiny run is redone (no teacher, no default students)
    assert counts["distill"] == 7 and "train_teacher" not in counts
    assert counts["study_table"] == 8 and counts["assemble"] == 4


def test_every_table_has_its_rows_and_numbers_from_the_metrics_files(study_run):
    workdir, _ = study_run
    target = workdir / "results" / "fmnist"
    for table, spec in STUDY["tables"].items():
        csv = pd.read_csv(target / "tables" / f"{table}.csv", dtype={"row": str})
        record = json.loads((target / "tables" / f"{table}.json").read_text())
        markdown = (target / "tables" / f"{table}.md").read_text()
        rows = list(spec["rows"])
        if table == "class_frequencies":
            assert list(dict.fromkeys(csv["row"])) == rows and len(csv) == 10 * len(rows)
        else:
            assert list(csv["row"]) == rows
        assert record["verdicts"] and all(line in markdown for line in record["verdicts"])
        assert set(record["provenance"]["inputs"]) >= {f"transfer/{s}/seed0.counts.csv" for s in spec["rows"].values()}
        assert (target / "tables" / f"{table}.tex").read_text().startswith("\\begin{table}")
        if table in ("main", "table1", "table2", "table5"):
            assert (target / "figures" / f"{table}.png").stat().st_size > 1000
    main = pd.read_csv(target / "tables" / "main.csv").set_index("row")
    for set_name in ("real", "noise", "natural_bal"):
        aug = json.loads((target / "students" / set_name / "seed0" / "metrics.json").read_text())["test_accuracy"]
        noaug = json.loads((target / "students" / f"{set_name}.noaug" / "seed0" / "metrics.json").read_text())
        assert main.loc[set_name, "accuracy_default_mean"] == pytest.approx(100 * aug)
        assert main.loc[set_name, "accuracy_noaug_seed0"] == pytest.approx(100 * noaug["test_accuracy"])
        assert main.loc[set_name, "accuracy_noaug_n"] == 1
        distance = json.loads((target / "distance" / set_name / "seed0.json").read_text())["hausdorff"]
        assert main.loc[set_name, "hausdorff_mean"] == pytest.approx(distance)
    table1 = pd.read_csv(target / "tables" / "table1.csv")
    assert table1["classes"].tolist() == [2, 4] and table1["size"].tolist() == [100, 100]
    assert "study (CIFAR-10) accuracy" in table1.columns
    table9 = pd.read_csv(target / "tables" / "table9.csv")
    assert table9["study (FMNIST) size"].tolist() == [60000, 47120]  # the study's Table 9


def test_the_noaug_variant_trains_without_augmentation_on_cached_logits(study_run):
    workdir, _ = study_run
    metrics = json.loads((workdir / "results" / "fmnist" / "students" / "noise.noaug" / "seed0" / "metrics.json").read_text())
    student = metrics["provenance"]["config"]["student"]
    assert not student["augment"]["flip"] and student["augment"]["translate"] == 0
    default = json.loads((workdir / "results" / "fmnist" / "students" / "noise" / "seed0" / "metrics.json").read_text())
    assert default["provenance"]["config"]["student"]["augment"]["flip"] is True


def test_report_holds_every_table(study_run):
    workdir, _ = study_run
    snakemake(workdir, "--report", "report.html", "all_tables")
    html = (workdir / "report.html").read_text(errors="replace")
    assert len(html) > 10000
    for name in ("Study tables", "Study figures", "table1.csv", "table9.csv", "main.png", "class_counts_natural_bal.png", "summary.csv"):
        assert name in html, name
    assert snakemake(workdir, "-n", "all_tables").stdout.count("Nothing to be done") == 1


def test_tables_are_audited_and_go_stale_when_a_student_is_edited(study_run, tmp_path):
    import subprocess
    import sys

    workdir, _ = study_run
    copy = tmp_path / "run"
    shutil.copytree(workdir / "results", copy / "results")

    def audit():
        result = subprocess.run([sys.executable, "-m", "dfkd.cli", "audit", "results", "--json"],
                                capture_output=True, text=True, cwd=copy)
        return {entry["path"].split("results/", 1)[-1]: entry["status"] for entry in json.loads(result.stdout)}

    assert audit()["fmnist/tables/table5.json"] == "ok"
    metrics = copy / "results" / "fmnist" / "students" / "noise" / "seed0" / "metrics.json"
    record = json.loads(metrics.read_text())
    record["test_accuracy"] = 0.99  # a hand edit
    metrics.write_text(json.dumps(record))
    status = audit()
    assert status["fmnist/students/noise/seed0/metrics.json"] == "modified"
    assert status["fmnist/tables/table5.json"] == "stale" and status["fmnist/tables/main.json"] == "stale"
    assert status["fmnist/tables/table3.json"] == "ok"  # reads noise.noaug, not the edited run
