"""The tiny workflow through a real single-node SLURM cluster (fake GPUs), compared with a local run.

Starts munged, slurmctld and slurmd under a temporary folder (tests/slurm/start-cluster.sh),
submits with `--executor slurm` and a profile derived from profiles/slurm/config.yaml (GPU
rules on the fake-GPU partition), checks in SLURM's own records that the jobs ran there with
the resources asked for, compares the results with a local run, and stops only the daemons it
started. Needs root and the Debian packages slurmctld, slurmd, slurm-client and munge.
"""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, requires_fmnist, snakemake, tiny_config, write_workdir

SLURM_BINARIES = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol")
missing = [name for name in SLURM_BINARIES if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.slurm,
    requires_fmnist,
    pytest.mark.skipif(bool(missing), reason=f"SLURM packages missing ({missing}): apt-get install slurmctld slurmd slurm-client munge"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starting slurmctld/slurmd/munged needs root"),
]
GPU_RULES = ("train_teacher", "extract_features", "distill", "distance")


def slurm_config() -> dict:
    config = tiny_config()
    config["run_targets"] = ["fmnist"]
    del config["targets"]["fmnist_b"]
    config["targets"]["fmnist"]["dataset"]["count"] = 1200
    config["transfer_sets"] = {name: config["transfer_sets"][name] for name in ("real", "noise")}
    return config


def local_test_profile(folder: Path) -> Path:
    """profiles/slurm/config.yaml with this machine's partitions, fake GPUs and small limits."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile.update({"jobs": 4, "retries": 0, "latency-wait": 5, "slurm-status-command": "squeue",
                    "slurm-init-seconds-before-status-checks": 2, "slurm-keep-successful-logs": True})
    profile.pop("set-threads", None)
    profile["default-resources"].update({"slurm_partition": "debug", "mem_mb": 1500, "runtime": 10, "cpus_per_task": 1})
    for rule in GPU_RULES:
        profile["set-resources"][rule].update(
            {"slurm_partition": "gpu", "gpu_model": "fake", "cpus_per_gpu": 1, "mem_mb": 2500, "runtime": 10})
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


@pytest.fixture(scope="module")
def cluster():
    # Not under pytest's tmp folder: that is mode 0700, and munged runs as user munge.
    run_dir = Path(tempfile.mkdtemp(prefix="dfkd-slurm-"))
    run_dir.chmod(0o755)
    started = subprocess.run(["bash", str(REPO / "tests" / "slurm" / "start-cluster.sh"), str(run_dir)],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "MEM_MB": "12000"})
    try:
        assert started.returncode == 0, started.stderr
        env = dict(os.environ, SLURM_CONF=str(run_dir / "slurm.conf"),
                   PATH=f"{run_dir / 'bin'}{os.pathsep}{os.environ['PATH']}")
        yield env
    finally:
        subprocess.run(["bash", str(REPO / "tests" / "slurm" / "stop-cluster.sh"), str(run_dir)], timeout=60)
        shutil.rmtree(run_dir, ignore_errors=True)


def slurm_jobs(env) -> list[dict]:
    """SLURM's record of every job (finished ones stay for MinJobAge), as key=value dicts."""
    text = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, env=env, check=True).stdout
    jobs = []
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        jobs.append(fields)
    return jobs


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_workflow_runs_through_slurm_and_matches_a_local_run(cluster, tmp_path):
    # 1. the tiny workflow through SLURM
    slurm_dir = tmp_path / "slurm_run"
    slurm_dir.mkdir()
    write_workdir(slurm_dir, slurm_config())
    profile = local_test_profile(tmp_path / "profile")
    snakemake(slurm_dir, "--executor", "slurm", "--profile", str(profile), timeout=540, env=cluster)

    # 2. SLURM's own records: every job completed, GPU rules on the GPU partition with a GPU
    jobs = slurm_jobs(cluster)
    assert jobs, "no job reached SLURM"
    assert all(job["JobState"] == "COMPLETED" for job in jobs), [(j["JobId"], j["JobState"]) for j in jobs]
    gpu_jobs = [job for job in jobs if "gpu" in job.get("TresPerNode", "") + job.get("TresPerJob", "") + job.get("TRES", "")]
    cpu_jobs = [job for job in jobs if job not in gpu_jobs]
    assert all(job["Partition"] == "gpu" for job in gpu_jobs) and all(job["Partition"] == "debug" for job in cpu_jobs)
    # 1 teacher + 3 feature files (train, test, noise) + 2 students + 2 distances
    assert len(gpu_jobs) == 8, [job.get("JobName") for job in gpu_jobs]
    assert len(cpu_jobs) >= 3 + 3 + 2 + 2 + 1  # prepare, label, assemble, plot, summary

    # 3. the same numbers as a local run
    local_dir = tmp_path / "local_run"
    local_dir.mkdir()
    write_workdir(local_dir, slurm_config())
    snakemake(local_dir)
    slurm_results, local_results = slurm_dir / "results" / "fmnist", local_dir / "results" / "fmnist"
    for name in ("real", "noise"):
        a = read_json(slurm_results / "students" / name / "seed0" / "metrics.json")
        b = read_json(local_results / "students" / name / "seed0" / "metrics.json")
        assert (a["test_accuracy"], a["per_class_accuracy"]) == (b["test_accuracy"], b["per_class_accuracy"])
        pd.testing.assert_frame_equal(pd.read_parquet(slurm_results / "transfer" / name / "seed0.parquet"),
                                      pd.read_parquet(local_results / "transfer" / name / "seed0.parquet"))
        a = read_json(slurm_results / "distance" / name / "seed0.json")
        b = read_json(local_results / "distance" / name / "seed0.json")
        assert a["hausdorff"] == b["hausdorff"]
