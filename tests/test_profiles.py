"""The SLURM profile asks GPUs for the GPU rules only; envs/ stays consistent with pyproject."""
import re
import tomllib

import pytest
import yaml

from conftest import REPO, snakemake, tiny_config, write_workdir

GPU_RULES = {"train_teacher", "extract_features", "distill", "distance"}


def test_envs_match_the_package_dependencies():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = {re.split(r"[<>=!~ ]", dep)[0].lower() for dep in pyproject["project"]["dependencies"]}
    env = yaml.safe_load((REPO / "envs" / "dfkd.yaml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {re.split(r"[<>=!~ ]", d)[0].lower() for d in dep["pip"] if not d.startswith("-e")}
        else:
            conda.add(re.split(r"[<>=!~ ]", dep)[0].lower())
    conda = {"snakemake" if name == "snakemake-minimal" else name for name in conda}
    assert wanted <= conda | pip, f"missing from envs/dfkd.yaml: {sorted(wanted - conda - pip)}"
    assert "-e .." in next(dep for dep in env["dependencies"] if isinstance(dep, dict))["pip"]


@pytest.mark.slow
def test_dry_run_with_the_slurm_profile_asks_gpus_for_gpu_rules_only(tmp_path):
    workdir = write_workdir(tmp_path, tiny_config())
    output = snakemake(workdir, "--dry-run", "--profile", str(REPO / "profiles" / "slurm")).stdout
    resources = {}
    for block in re.split(r"\n(?=rule \w+:)", output):
        match = re.match(r"rule (\w+):", block.strip())
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        if match and found:
            resources.setdefault(match.group(1), set()).add(found.group(1))
    assert GPU_RULES <= set(resources)
    for rule, lines in resources.items():
        for line in lines:
            if rule in GPU_RULES:
                assert "gpu=1" in line and "slurm_partition=gpu" in line, (rule, line)
            else:
                assert "gpu=" not in line and "slurm_partition=cpu" in line, (rule, line)


def test_workflow_is_lint_clean_and_formatted(tmp_path):
    import shutil
    import subprocess

    workdir = write_workdir(tmp_path, tiny_config())
    lint = snakemake(workdir, "--lint")
    assert "Congratulations" in lint.stdout + lint.stderr, lint.stdout[-3000:]
    snakefmt = shutil.which("snakefmt", path=str(REPO / ".venv" / "bin")) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt not installed (scripts/setup.sh installs it)")
    check = subprocess.run([snakefmt, "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]
