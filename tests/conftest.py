"""Shared fixtures: a tiny experiment config on real Fashion-MNIST (a subset) for workflow tests."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")

TINY_CONFIG = {
    "results": "results",
    "run_targets": ["fmnist", "fmnist_b"],
    "targets": {
        "fmnist": {
            "dataset": {"kind": "torchvision", "name": "FashionMNIST", "root": str(FMNIST), "count": 3000},
            "channels": 1,
            "image_size": 32,
            "num_classes": 10,
            "mean": [0.286],
            "std": [0.353],
            "total": 600,
            "per_class": 60,
            "teacher": {"arch": "lenet5", "epochs": 2, "batch_size": 128,
                        "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 0.0005}},
            "student": {"arch": "lenet5_half", "epochs": 1, "batch_size": 128,
                        "optimizer": {"name": "adam", "lr": 0.003}, "temperature": 20,
                        "augment": {"flip": True, "translate": 0.125}},
        },
    },
    "sources": {
        "noise": {"kind": "noise", "count": 500, "seed": 1},
        "shapes": {"kind": "shapes", "count": 500, "seed": 3},
        "strokes": {"kind": "strokes", "count": 500, "seed": 4},
        "patches": {"kind": "patches", "count": 500, "seed": 5},
        "digits": {"kind": "digits"},
    },
    "transfer_sets": {
        "real": {"sources": ["train"], "balanced": False},
        "noise": {"sources": ["noise"], "balanced": False},
        "synthetic_bal": {"sources": ["shapes", "strokes"]},
        "natural_bal": {"sources": ["patches", "digits"]},
    },
}


# A second target that builds one set: what one target's changes must never touch.
TINY_CONFIG["targets"]["fmnist_b"] = copy.deepcopy(TINY_CONFIG["targets"]["fmnist"])
TINY_CONFIG["targets"]["fmnist_b"]["dataset"]["count"] = 1000
TINY_CONFIG["targets"]["fmnist_b"]["sets"] = ["noise"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run torch on one thread: on a busy 2-core machine, 2 threads are ~10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_weights(a: Path, b: Path) -> None:
    """Two model files hold the same tensors, bit for bit and of the same dtype."""
    import torch

    from dfkd.io.artifacts import load_torch

    wa, wb = load_torch(a)["state_dict"], load_torch(b)["state_dict"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].dtype == wb[key].dtype and torch.equal(wa[key], wb[key]), key


def tiny_split(n: int, seed: int):
    """1x32x32 noise images; class c has a bright horizontal band in the c-th quarter (flip-invariant)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 80, (n, 1, 32, 32)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 0, 8 * c + 2:8 * c + 6, 4:28] = 230
    return images, labels.astype(np.int64)


def write_tiny_splits(root: Path, splits) -> dict[str, Path]:
    """`tiny_split` files as dfkd's prepare writes them: {name: root/name.h5} for each
    (name, rows, seed) of `splits`."""
    from dfkd.io.artifacts import write_h5

    files = {}
    for name, n, seed in splits:
        images, labels = tiny_split(n, seed)
        files[name] = root / f"{name}.h5"
        write_h5(files[name], {"images": images, "labels": labels}, None)
    return files


def fresh_copy(template: Path, tmp_path: Path, monkeypatch) -> Path:
    """A fresh copy of a module's built template folder, for a test that may change it; the
    working directory goes elsewhere (neither the copy's folder nor the template's), so that
    recorded relative inputs resolve only as they would for a user in another folder."""
    workdir = tmp_path / "copy"
    shutil.copytree(template, workdir)
    monkeypatch.chdir(tmp_path)
    return workdir


def tiny_config() -> dict:
    return copy.deepcopy(TINY_CONFIG)


requires_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def write_workdir(tmp: Path, config: dict) -> Path:
    """A working directory holding the workflow files and `config` as config.yaml."""
    for name in ("Snakefile", "rules", "report", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Snakemake in `workdir` (with this interpreter's environment on PATH)."""
    env = dict(env or os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", "--cores", "2", *args]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny workflow, run to the end once per test session (read-only for tests)."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    workdir = write_workdir(tmp_path_factory.mktemp("tiny_run"), tiny_config())
    snakemake(workdir)
    return workdir
