"""Workflow overheads: Snakemake planning time, and feature extraction's peak memory.

1. `snakemake -n` on the repo's default config after the workflow has run (a no-op: every
   output exists and is up to date). Run from the repository root; dry runs only, nothing
   there is built, changed or deleted. Target: < 5 s.
2. The same on a synthetic full study grid (4 targets x 20 transfer sets, in a temporary copy
   of Snakefile, rules/, report/, envs/): first with no results (Snakemake plans every job),
   then with every output that `snakemake --summary` lists created empty in that copy, all
   with one mtime (the grid's no-op; no job runs). These outputs have no Snakemake metadata,
   so that dry run skips the params/code checks a real results tree gets (the repo no-op above
   has them). Target for the no-op: < 5 s.
   Times: best of `--repeats` runs; `snakemake --version` is the interpreter + import floor.
3. `dfkd features` peak resident memory (GNU time's "Maximum resident set size") on fake
   sources of 3x32x32 uint8 images at two sizes per teacher, with the default chunk of 2048
   images: memory is bounded by the chunk, so it must not grow with N; then `dfkd label` on
   each features file (its output table, ~40 bytes a row, is the only part that grows).
   LeNet-5 runs at 20k and 1M rows, so the peak for 1M images is measured, not extrapolated.
   Teachers have random weights (speed and memory do not depend on them): AlexNet (the CIFAR
   teacher, ~120 images/s here) and LeNet-5 (fast enough to stream 1M rows in about 4
   minutes; the fake source takes 2.9 GiB in the scratch folder).

    python benchmarks/bench_workflow.py            # AlexNet at 2048 and 8192 rows, LeNet-5 at 20k and 1M
    python benchmarks/bench_workflow.py --quick    # AlexNet at 2048 and 4096, LeNet-5 at 10k and 50k
Needs GNU time at /usr/bin/time (Debian package `time`). Never run as a test.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from dfkd.io.artifacts import save_torch
from dfkd.models import build_model, model_record

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "report", "envs")
NOOP_TARGET_S = 5.0
BIN = Path(sys.executable).parent  # the venv's snakemake and dfkd


# ---------------------------------------------------------------------------- Snakemake
def timed_run(command: list[str], cwd: Path, repeats: int) -> tuple[float, str]:
    """Best wall time of `repeats` runs and the last run's output (a failure stops the benchmark)."""
    times, output = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed in {cwd} (exit {done.returncode}):\n{output[-3000:]}")
    return min(times), output


def planned_jobs(output: str) -> int:
    """The job count of a dry run's summary ('total  N'), 0 for 'Nothing to be done'."""
    match = re.search(r"^total\s+(\d+)", output, re.MULTILINE)
    return int(match.group(1)) if match else 0


def grid_config(targets: int, sets: int) -> dict:
    """The repo's config with `targets` targets and `sets` transfer-set recipes, all run."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    names = list(config["targets"])[:targets]
    sources = [name for name in config["sources"]]
    recipes = {"real": {"sources": ["train"], "balanced": False}}
    for i in range(sets - 1):  # one to three sources, balanced or not
        picked = [sources[(i + j * 3) % len(sources)] for j in range(1 + i % 3)]
        recipes[f"set{i:02d}"] = {"sources": list(dict.fromkeys(picked)), "balanced": i % 2 == 0}
    config["run_targets"] = names
    config["transfer_sets"] = recipes
    config.pop("study", None)  # the study's tables name the repo's sets; the grid has its own
    for name in names:
        config["targets"][name].pop("sets", None)  # every target runs every set of the grid
    config["results"] = "results"
    return config


def bench_snakemake(repeats: int, targets: int, sets: int) -> list[tuple[str, int, float]]:
    snakemake = str(BIN / "snakemake")
    rows = []
    floor, _ = timed_run([snakemake, "--version"], REPO, repeats)
    rows.append(("snakemake --version (startup floor)", 0, floor))
    if not (REPO / "results").is_dir():
        print(f"note: {REPO / 'results'} does not exist; the repo dry run below plans the whole workflow")
    seconds, output = timed_run([snakemake, "-n", "--cores", "1"], REPO, repeats)
    jobs = planned_jobs(output)  # 0 when results/ is complete and up to date
    rows.append(("repo config, after the run (no-op)" if not jobs else "repo config, results stale (plans jobs)",
                 jobs, seconds))
    with tempfile.TemporaryDirectory(prefix="dfkd-grid-") as tmp:
        tmp = Path(tmp)
        for name in WORKFLOW_FILES:
            source = REPO / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, tmp / name)
        (tmp / "config.yaml").write_text(yaml.safe_dump(grid_config(targets, sets), sort_keys=False))
        label = f"{targets} targets x {sets} sets"
        seconds, output = timed_run([snakemake, "-n", "--cores", "1"], tmp, repeats)
        rows.append((f"{label}, nothing built (full plan)", planned_jobs(output), seconds))
        _, summary = timed_run([snakemake, "--summary", "--cores", "1"], tmp, 1)
        fake_outputs(tmp, summary)
        seconds, output = timed_run([snakemake, "-n", "--cores", "1"], tmp, repeats)
        jobs = planned_jobs(output)
        rows.append((f"{label}, all outputs present ({'no-op' if not jobs else 'still plans jobs'})", jobs, seconds))
    return rows


def fake_outputs(root: Path, summary: str) -> None:
    """Every output file that `snakemake --summary` lists, empty, all with one mtime (so none is newer)."""
    lines = [line for line in summary.splitlines() if line.startswith("results/") and "\t" in line]
    for line in lines:
        output = root / line.split("\t")[0]
        output.parent.mkdir(parents=True, exist_ok=True)
        output.touch()
        os.utime(output, (1e9, 1e9))


# ---------------------------------------------------------------------------- feature memory
def write_fake_source(path: Path, rows: int, seed: int = 0) -> None:
    """uint8 (rows, 3, 32, 32) images in chunks of 4096 rows (like dfkd's writers), streamed."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as handle:
        images = handle.create_dataset("images", (rows, 3, 32, 32), np.uint8, chunks=(min(rows, 4096), 3, 32, 32))
        for start in range(0, rows, 16384):
            stop = min(start + 16384, rows)
            images[start:stop] = rng.integers(0, 256, (stop - start, 3, 32, 32), dtype=np.uint8)


def write_teacher(path: Path, arch: str) -> None:
    import torch

    torch.manual_seed(0)
    model = build_model(arch, 3, 10, 32)
    save_torch(path, model_record(model, arch, 3, 10, 32, [0.5], [0.5], {"stage": "bench"}))


def peak_rss(command: list[str]) -> tuple[float, float]:
    """(max RSS in MiB, wall seconds) of a command under GNU time."""
    command = ["/usr/bin/time", "-v", *command]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", done.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(clock.split(":"))))
    return rss_kb / 1024, seconds


def features_command(model: Path, data: Path, out: Path, batch_size: int) -> list[str]:
    return [str(BIN / "dfkd"), "features", "--threads", "1", "--model", str(model),
            "--data", str(data), "--out", str(out), "--batch-size", str(batch_size)]


def label_command(features: Path, out: Path) -> list[str]:
    return [str(BIN / "dfkd"), "label", "--features", str(features), "--out", str(out)]


def import_rss() -> float:
    """Max RSS in MiB of a process that only imports what `dfkd features` imports (the floor)."""
    command = ["/usr/bin/time", "-v", sys.executable, "-c", "import torch, h5py, dfkd.cli, dfkd.stages.features, dfkd.models"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) / 1024


def bench_features(sizes: dict[str, list[int]], batch_size: int, scratch: Path | None) -> list[tuple]:
    if not Path("/usr/bin/time").exists():
        raise SystemExit("/usr/bin/time not found: install GNU time (apt-get install time).")
    rows = [("imports", 0, 0.0, import_rss(), 0.0)]
    with tempfile.TemporaryDirectory(prefix="dfkd-features-", dir=scratch) as tmp:
        tmp = Path(tmp)
        for arch, counts in sizes.items():
            write_teacher(tmp / f"{arch}.pt", arch)
            for n in counts:
                data = tmp / f"source_{n}.h5"
                if not data.exists():
                    write_fake_source(data, n)
                rss, seconds = peak_rss(features_command(tmp / f"{arch}.pt", data, tmp / "features.h5", batch_size))
                rows.append((arch, n, data.stat().st_size / 2**20, rss, seconds))
                label_rss, label_seconds = peak_rss(label_command(tmp / "features.h5", tmp / "labels.parquet"))
                rows.append((f"{arch} label", n, (tmp / "features.h5").stat().st_size / 2**20, label_rss, label_seconds))
                os.remove(tmp / "features.h5")
                os.remove(tmp / "labels.parquet")
            for data in tmp.glob("source_*.h5"):
                data.unlink()
    return rows


# ---------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller feature sources")
    parser.add_argument("--repeats", type=int, default=3, help="dry runs per case; the best counts (default 3)")
    parser.add_argument("--targets", type=int, default=4, help="grid targets (default 4, at most the config's)")
    parser.add_argument("--sets", type=int, default=20, help="grid transfer sets (default 20)")
    parser.add_argument("--alexnet-rows", type=int, nargs="+", help="AlexNet source sizes (default 2048 8192)")
    parser.add_argument("--lenet-rows", type=int, nargs="+", help="LeNet-5 source sizes (default 20000 1000000)")
    parser.add_argument("--batch-size", type=int, default=2048, help="features chunk (default 2048, the config's)")
    parser.add_argument("--scratch", type=Path, help="folder for the fake sources (default: the system temp)")
    parser.add_argument("--skip-snakemake", action="store_true")
    parser.add_argument("--skip-features", action="store_true")
    args = parser.parse_args()
    sizes = {"alexnet": args.alexnet_rows or ([2048, 4096] if args.quick else [2048, 8192]),
             "lenet5": args.lenet_rows or ([10_000, 50_000] if args.quick else [20_000, 1_000_000])}

    if not args.skip_snakemake:
        rows = bench_snakemake(args.repeats, args.targets, args.sets)
        header = f"{'snakemake dry run':<44} {'jobs':>5} {'best s':>7}  target"
        print(f"\nsnakemake: best of {args.repeats} runs")
        print(header)
        print("-" * len(header))
        for name, jobs, seconds in rows:
            verdict = ""
            if "no-op" in name:
                verdict = f"< {NOOP_TARGET_S:.0f} s  {'met' if seconds < NOOP_TARGET_S else 'NOT met'}"
            print(f"{name:<44} {jobs:>5} {seconds:>7.2f}  {verdict}", flush=True)

    if not args.skip_features:
        rows = bench_features(sizes, args.batch_size, args.scratch)
        header = f"{'stage':<14} {'rows':>8} {'input MiB':>9} {'peak RSS MiB':>13} {'wall s':>7} {'img/s':>7}"
        print(f"\ndfkd features (3x32x32 uint8, chunk {args.batch_size}, 1 thread), then dfkd label on its output")
        print(header)
        print("-" * len(header))
        for stage, n, size, rss, seconds in rows:
            if not n:
                print(f"{stage:<14} {'-':>8} {'-':>9} {rss:>13.0f} {'-':>7} {'-':>7}   (torch, h5py, dfkd imported)")
                continue
            print(f"{stage:<14} {n:>8} {size:>9.0f} {rss:>13.0f} {seconds:>7.1f} {n / seconds:>7.0f}", flush=True)
        for arch in sizes:
            for stage in (arch, f"{arch} label"):
                peaks = {n: rss for a, n, _, rss, _ in rows if a == stage}
                small, large = min(peaks), max(peaks)
                print(f"{stage}: peak {peaks[small]:.0f} MiB at {small} rows, {peaks[large]:.0f} MiB at {large} rows "
                      f"({peaks[large] / peaks[small]:.2f}x over {large / small:.0f}x the rows)")

if __name__ == "__main__":
    main()
