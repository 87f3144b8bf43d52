"""One prepared check of dfkd's CUDA paths: run the stages on the GPU, time them, print one table.

    benchmarks/device_check.sh                # on a CUDA machine (installs .whl/ first); < 8 min on an H200
    benchmarks/device_check.sh --cpu          # tiny sizes on a CPU: what tests/test_device_check.py runs
    python benchmarks/device_check.py --help  # with dfkd and its dependencies importable

Stages, in order: the tests' tiny workflow (`TINY_CONFIG`) end to end through Snakemake; one
process's start-up (imports, first CUDA call: part of every stage's wall time); then
config.yaml's Fashion-MNIST target stage by stage through the `dfkd` CLI, as rules/*.smk call
it: prepare (train, test, the `patches` source), teacher, features (patches, train), labels and
assembly of the `natural` set (all 60k patches), its student with flips (per-view teacher
logits), the same student with CutMix (the teacher online on the mixed images; only where
`dfkd.augment` has it), the
set's Hausdorff distance to the training set on the training device (60k x 60k), and the same
distance on the CPU (the two must agree: the search is exact).

Per stage: wall time, images/s, peak GPU memory (`torch.cuda.max_memory_allocated` in the
stage's process), the device the stage's metrics name, accuracy against the CPU numbers of
the published main table, docs/results/fmnist/main.md (mean of seeds; flagged beyond 2 sd), and for training
stages the model FLOP rate against the H200's bf16 matrix rate. Writes $OUT/device_check.md,
$OUT/device_check.json, $OUT/logs.tar.gz (every stage's log and metrics). Results go to --work.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FMNIST = "/usr/share/datasets/fashion-mnist"
TARGET, SOURCE, SET = "fmnist", "patches", "natural"  # the set drawn only from SOURCE: all its rows
PEAK_BF16_FLOPS = 790e12  # 8192^3 bf16 matmul measured on an H200 here (KINDS.md); datasheet dense: ~990e12
CUTMIX = {"p": 0.5}  # the mixing student's CutMix probability (other keys: dfkd's defaults)
SIZES = {  # (dataset count, source count, teacher epochs, student epochs); None keeps config.yaml's
    "cuda": (None, None, None, None),
    "cpu": (2000, 2000, 1, 1),
}


# ---------------------------------------------------------------------------- the `dfkd` shim
def run_dfkd(argv: list[str]) -> int:
    """`dfkd ARGS` as the CLI runs it, then one JSON line of this process's peak GPU memory
    appended to $DFKD_DEVICE_PEAKS (what Snakemake's jobs and the direct stages call)."""
    from dfkd.cli import main

    code = main(argv)
    peak = None
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_initialized():
            peak = torch.cuda.max_memory_allocated()
    if os.environ.get("DFKD_DEVICE_PEAKS"):
        with open(os.environ["DFKD_DEVICE_PEAKS"], "a") as handle:
            handle.write(json.dumps({"command": argv[:1], "peak_bytes": peak}) + "\n")
    return code


def write_shim(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "dfkd"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" dfkd-run "$@"\n')
    shim.chmod(0o755)


# ---------------------------------------------------------------------------- CPU references
REFERENCE_TABLE = REPO / "docs" / "results" / "fmnist" / "main.md"  # the published CPU run (dfkd publish)


def cpu_references(text: str) -> dict[str, tuple[float, float | None]]:
    """CPU accuracies (percent) of a published main table (`docs/results/fmnist/main.md`):
    {'teacher': (acc, None), set: (mean over seeds, 2 sd)}; a set whose students differ from
    the CPU mean by more than 2 sd is flagged."""
    refs: dict[str, tuple[float, float | None]] = {}
    found = re.search(r"Teacher test accuracy ([\d.]+)%", text)
    if found:
        refs["teacher"] = (float(found.group(1)), None)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        column = next((k for k, c in enumerate(cells) if c.startswith("accuracy") and "mean ± sd" in c), None)
        if cells[:1] == ["row"] and column is not None:
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                values = [c.strip() for c in row.strip().strip("|").split("|")]
                mean, _, sd = values[column].partition(" ± ")
                refs[values[0]] = (float(mean), 2 * float(sd) if sd else None)
            break
    return refs


def verdict(accuracy: float | None, ref: tuple[float, float | None] | None) -> tuple[str, str]:
    """(reference text, verdict) for an accuracy in [0, 1] against a CPU reference in percent."""
    if accuracy is None or ref is None:
        return "-", "no CPU reference"
    mean, spread = ref
    diff = 100 * accuracy - mean
    if spread is None:
        return f"{mean:.2f} (1 seed)", f"{diff:+.2f} pts (no seed spread recorded)"
    ok = abs(diff) <= spread
    return f"{mean:.2f} ± 2 sd {spread:.2f}", f"{diff:+.2f} pts: {'within' if ok else 'OUTSIDE'} 2 sd of the CPU seeds"


# ---------------------------------------------------------------------------- FLOPs
def train_flops_per_image(arch: str, channels: int, classes: int, size: int, teacher_arch: str | None,
                          teacher_share: float = 1.0) -> float:
    """Model FLOPs of one training image: 3x the student's forward (forward + backward), plus
    the teacher's forward on the share of images it labels in the step (1 online; CutMix's p
    beside per-view logits). Counted by torch on the CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dfkd.models import build_model

    def forward(name: str) -> int:
        model = build_model(name, channels, classes, size).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(2, channels, size, size))  # batch of 2: batch norm needs more than 1
        return counter.get_total_flops() / 2

    return 3 * forward(arch) + (teacher_share * forward(teacher_arch) if teacher_arch else 0)


# ---------------------------------------------------------------------------- running stages
class Check:
    def __init__(self, args: argparse.Namespace):
        self.args, self.rows = args, []
        self.refs = cpu_references(REFERENCE_TABLE.read_text())
        self.work, self.out = Path(args.work), Path(args.out)
        self.logs, self.bin = self.work / "logs", self.work / "bin"
        self.logs.mkdir(parents=True, exist_ok=True)
        write_shim(self.bin)
        self.deadline = time.monotonic() + args.budget
        self.env = dict(os.environ, PATH=f"{self.bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                        f"{os.environ.get('PATH', '')}",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        if args.cpu:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the same script on a GPU machine stays on the CPU

    def run(self, stage: str, commands: list[list[str]], cwd: Path | None = None, timeout: float = 600) -> dict:
        """Run commands (in parallel) with this stage's log and peak file; return a row."""
        log, peaks = self.logs / f"{stage}.log", self.logs / f"{stage}.peaks.jsonl"
        peaks.unlink(missing_ok=True)
        left = self.deadline - time.monotonic()
        if left < 5:
            return {"stage": stage, "status": "skipped (budget spent)"}
        env = dict(self.env, DFKD_DEVICE_PEAKS=str(peaks))
        started = time.perf_counter()
        with open(log, "w") as handle:
            procs = []
            for command in commands:
                handle.write(f"$ {' '.join(command)}\n")
                handle.flush()
                procs.append(subprocess.Popen(command, cwd=cwd or self.work, env=env, stdout=handle,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            codes = []
            for proc in procs:
                try:
                    codes.append(proc.wait(timeout=max(1.0, min(timeout, left))))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 15)
                    codes.append(proc.wait())
        seconds = time.perf_counter() - started
        peak_values = [json.loads(line)["peak_bytes"] for line in peaks.read_text().splitlines()] if peaks.exists() else []
        peak_values = [p for p in peak_values if p is not None]
        failed = [c for c in codes if c != 0]
        status = "ok" if not failed else f"failed (exit {failed[0]}; see logs/{log.name})"
        print(f"  {stage}: {status}, {seconds:.1f} s", flush=True)
        return {"stage": stage, "status": status, "seconds": round(seconds, 2),
                "peak_gpu_mib": round(max(peak_values) / 2**20, 1) if peak_values else None,
                "jobs_on_gpu": len(peak_values), "log": f"logs/{log.name}"}

    def add(self, row: dict, **fields) -> dict:
        row.update(fields)
        self.rows.append(row)
        return row


def dfkd(*args: str) -> list[str]:
    return ["dfkd", *args]


def results_of(work: Path) -> Path:
    return work / "full" / "results" / TARGET


def check_tiny(check: Check) -> None:
    """The tests' tiny config, end to end through Snakemake (every rule, both targets)."""
    from tests.conftest import TINY_CONFIG, write_workdir

    config = copy.deepcopy(TINY_CONFIG)
    for target in config["targets"].values():
        target["dataset"]["root"] = str(check.args.data)
    if check.args.cpu:  # one target and one set: the --cpu run stays short
        config["run_targets"] = [TARGET]
        config["targets"][TARGET]["sets"] = ["noise"]
    workdir = check.work / "tiny"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    write_workdir(workdir, config)
    row = check.run("tiny_workflow", [[sys.executable, "-m", "snakemake", "--workflow-profile", "none",
                                       "--cores", str(check.args.cores), "--scheduler", "greedy"]], cwd=workdir)
    metrics = [json.loads(p.read_text()) for p in sorted(workdir.glob("results/*/students/**/metrics.json"))]
    accuracy = sum(m["test_accuracy"] for m in metrics) / len(metrics) if metrics else None
    devices = sorted({m.get("device", "?") for m in metrics})
    check.add(row, what=f"Snakemake, tiny config ({', '.join(config['run_targets'])}), {len(metrics)} students",
              accuracy=accuracy, device=", ".join(devices) or "-",
              note=f"mean student accuracy; {row.get('jobs_on_gpu', 0)} jobs initialised CUDA")


def full_config(args: argparse.Namespace) -> dict:
    """config.yaml's target, with the data at --data and, with --cpu, tiny sizes."""
    from dfkd.config import load_config

    config = load_config(REPO / "config.yaml")
    target = config["targets"][TARGET]
    target["dataset"]["root"] = str(args.data)
    count, source_count, teacher_epochs, student_epochs = SIZES["cpu" if args.cpu else "cuda"]
    if count:
        target["dataset"]["count"] = count
        target.update(total=count, per_class=count // target["num_classes"])
        config["sources"][SOURCE]["count"] = source_count
        target["teacher"]["epochs"], target["student"]["epochs"] = teacher_epochs, student_epochs
    return config


def metrics_row(check: Check, row: dict, metrics_path: Path, ref_key: str | None, flops: float | None) -> None:
    """Fill a training stage's row from its metrics.json."""
    if not metrics_path.exists():
        check.add(row)
        return
    metrics = json.loads(metrics_path.read_text())
    ips = metrics.get("images_per_second")
    reference, judged = ("-", "n/a (--cpu: tiny sizes)") if check.args.cpu else \
        verdict(metrics["test_accuracy"], check.refs.get(ref_key) if ref_key else None)
    achieved = flops * ips if flops and ips else None
    check.add(row, accuracy=metrics["test_accuracy"], images_per_second=ips, device=metrics.get("device"),
              reference=reference, verdict=judged, teacher_logits=metrics.get("teacher_logits"),
              tflops=achieved / 1e12 if achieved else None,
              fraction_of_peak=achieved / PEAK_BF16_FLOPS if achieved and not check.args.cpu else None)


def check_full(check: Check) -> None:
    """config.yaml's target, stage by stage, with the commands of rules/*.smk."""
    import dfkd.slices as slices
    from dfkd.augment import AUGMENT_DEFAULTS

    config = full_config(check.args)
    base = check.work / "full"
    shutil.rmtree(base, ignore_errors=True)
    R = results_of(check.work)
    p = lambda kind, name="": str(R / kind / name)  # noqa: E731  (rules/common.smk's `path`)
    target = config["targets"][TARGET]
    threads = str(check.args.threads)

    # 0. what every stage's process pays before its work: Python, torch, dfkd, the first CUDA call
    probe = "import torch, h5py, dfkd.cli; torch.zeros(1, device='cuda' if torch.cuda.is_available() else 'cpu').sum().item()"
    check.add(check.run("startup", [[sys.executable, "-c", probe]]),
              what="one process: import torch, h5py, dfkd; first CUDA call", note="in every stage's wall time")

    # 1. prepare (CPU work, three processes at once)
    row = check.run("prepare", [dfkd("prepare", "--name", name, "--params", slices.as_json(slices.prepare_slice(config, TARGET, name)),
                                     "--out", p("data", f"{name}.h5")) for name in ("train", "test", SOURCE)])
    images = _rows(p("data", "train.h5")) + _rows(p("data", "test.h5")) + _rows(p("data", f"{SOURCE}.h5"))
    check.add(row, what=f"dfkd prepare train, test, {SOURCE} (CPU)", images=images,
              images_per_second=images / row["seconds"] if images and row.get("seconds") else None)

    # 2. teacher
    row = check.run("teacher", dfkd_cmd("train-teacher", "--train", p("data", "train.h5"), "--test", p("data", "test.h5"),
                                        "--params", slices.as_json(slices.teacher_slice(config, TARGET)),
                                        "--out-dir", p("teacher"), "--threads", threads))
    spec = (target["channels"], target["num_classes"], target["image_size"])
    metrics_row(check, row, R / "teacher" / "metrics.json", "teacher",
                train_flops_per_image(target["teacher"]["arch"], *spec, None))
    row["what"] = f"dfkd train-teacher {target['teacher']['arch']}, {target['teacher']['epochs']} epochs"

    # 3. features of the source and of the training set
    for name in (SOURCE, "train"):
        row = check.run(f"features_{name}", dfkd_cmd("features", "--model", p("teacher", "model.pt"),
                                                     "--data", p("data", f"{name}.h5"), "--out", p("features", f"{name}.h5"),
                                                     "--batch-size", str(config["feature_batch_size"]), "--threads", threads))
        images = _rows(p("features", f"{name}.h5"), "features")
        check.add(row, what=f"dfkd features {name}", images=images,
                  images_per_second=images / row["seconds"] if images and row.get("seconds") else None)

    # 4. labels and the transfer set (CPU, small)
    row = check.run("label_assemble", [dfkd("label", "--features", p("features", f"{SOURCE}.h5"), "--out", p("labels", f"{SOURCE}.parquet"))])
    options = [f"--{k.replace('_', '-')}={v}" for k, v in slices.assemble_slice(config, TARGET, SET).items()
               if k in ("per_class", "total", "classes", "size", "seed") and v is not None]
    unbalanced = [] if slices.assemble_slice(config, TARGET, SET)["balanced"] else ["--unbalanced"]
    if row["status"] == "ok":
        row2 = check.run("assemble", [dfkd("assemble", "--labels", p("labels", f"{SOURCE}.parquet"), "--num-classes",
                                           str(target["num_classes"]), *unbalanced, *options,
                                           "--out", p("transfer", f"{SET}.parquet"), "--counts", p("transfer", f"{SET}.counts.csv"))])
        row["seconds"] = row["seconds"] + row2.get("seconds", 0)
        row["status"] = row2["status"]
    check.add(row, what=f"dfkd label {SOURCE} + assemble {SET} (CPU)", device="cpu")

    # 5. students: flips (per-view teacher logits), then CutMix (the teacher on the mixed images) where it exists
    student = slices.student_slice(config, TARGET)
    flops = train_flops_per_image(target["student"]["arch"], *spec, None)
    distill(check, config, "student_flips", SET, student, flops, SET)
    cutmix = AUGMENT_DEFAULTS.get("cutmix")
    if isinstance(cutmix, dict):
        mixing = copy.deepcopy(student)
        mixing["student"]["augment"] = {**mixing["student"].get("augment", {}), "cutmix": {**cutmix, **CUTMIX}}
        online = train_flops_per_image(target["student"]["arch"], *spec, target["teacher"]["arch"],
                                       teacher_share=mixing["student"]["augment"]["cutmix"]["p"])
        distill(check, config, "student_cutmix", f"{SET}.cutmix", mixing, online, None)
    else:
        check.add({"stage": "student_cutmix", "status": "not available",
                   "note": "dfkd.augment.AUGMENT_DEFAULTS has no 'cutmix' key in this checkout"})

    # 6. the set's Hausdorff distance to the training set: on the training device, then on the CPU
    row = check.run("hausdorff", dfkd_cmd("distance", "--manifest", p("transfer", f"{SET}.parquet"),
                                          "--features", p("features", f"{SOURCE}.h5"), "--train-features", p("features", "train.h5"),
                                          "--out", p("distance", f"{SET}.json"), "--threads", threads))
    hausdorff_row(check, row, R / "distance" / f"{SET}.json", "dfkd distance (pick_device)")
    row = check.run("hausdorff_cpu", [dfkd("hausdorff", p("features", f"{SOURCE}.h5"), p("features", "train.h5"),
                                           "--out", p("distance", f"{SET}.cpu.json"), "--threads", threads)])
    hausdorff_row(check, row, R / "distance" / f"{SET}.cpu.json", "dfkd hausdorff (CPU), the same sets")


def dfkd_cmd(*args: str) -> list[list[str]]:
    return [dfkd(*args)]


def distill(check: Check, config: dict, stage: str, run: str, student: dict, flops: float, ref_key: str | None) -> None:
    R = results_of(check.work)
    out = R / "students" / run
    row = check.run(stage, dfkd_cmd("distill", "--teacher", str(R / "teacher" / "model.pt"),
                                    "--manifest", str(R / "transfer" / f"{SET}.parquet"),
                                    "--data", str(R / "data" / f"{SOURCE}.h5"), "--features", str(R / "features" / f"{SOURCE}.h5"),
                                    "--test", str(R / "data" / "test.h5"), "--params", json.dumps(student),
                                    "--out-dir", str(out), "--threads", str(check.args.threads)))
    metrics_row(check, row, out / "metrics.json", ref_key, flops)
    augment = student["student"].get("augment", {})
    row["what"] = f"dfkd distill {SET}, {student['student']['arch']}, augment {json.dumps(augment)}"


def hausdorff_row(check: Check, row: dict, path: Path, what: str) -> None:
    fields = {"what": what}
    if path.exists():
        result = json.loads(path.read_text())
        rows = result["n_a"] + result["n_b"]
        fields.update(images=rows, images_per_second=rows / row["seconds"] if row.get("seconds") else None,
                      hausdorff=result["hausdorff"], note=f"{result['n_a']} x {result['n_b']}, D {result['dim']}, "
                                                          f"H {result['hausdorff']:.6g}")
    check.add(row, **fields)


def _rows(path: str, name: str = "images") -> int:
    import h5py

    if not Path(path).exists():
        return 0
    with h5py.File(path, "r") as handle:
        return int(handle[name].shape[0])


# ---------------------------------------------------------------------------- the table
COLUMNS = [("stage", "stage"), ("status", "status"), ("seconds", "wall s"), ("images_per_second", "images/s"),
           ("peak_gpu_mib", "peak GPU MiB"), ("device", "device"), ("accuracy", "accuracy"),
           ("reference", "CPU (docs/results)"), ("verdict", "difference"), ("tflops", "TFLOP/s"),
           ("fraction_of_peak", "of bf16 peak"), ("note", "note")]


def cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "accuracy":
        return f"{100 * value:.2f}%"
    if key == "fraction_of_peak":
        return f"{100 * value:.4f}%"
    if key == "tflops":
        return f"{value:.3g}"
    if key == "images_per_second":
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(key, row.get(key)).replace("|", "/") for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def machine(cpu: bool) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "cuda_available": torch.cuda.is_available(), "gpu": None}
    if torch.cuda.is_available() and not cpu:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dfkd-run"]:
        return run_dfkd(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (1 epoch, 2000 images)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "device_out", help="table, JSON, logs (default $OUT or device_out)")
    parser.add_argument("--work", help="results and per-stage logs (default: a new folder in /tmp)")
    parser.add_argument("--data", default=FMNIST, help=f"Fashion-MNIST's IDX files (default {FMNIST})")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="Snakemake's --cores (default: all)")
    parser.add_argument("--threads", type=int, help="--threads of each direct stage (default: --cores)")
    parser.add_argument("--budget", type=float, help="seconds after which no stage starts (default 450; --cpu 900)")
    parser.add_argument("--skip-tiny", action="store_true", help="leave out the tiny workflow")
    args = parser.parse_args(argv)
    args.work = args.work or tempfile.mkdtemp(prefix="dfkd_device_check_")
    args.threads = args.threads or args.cores
    args.budget = args.budget or (900 if args.cpu else 450)
    args.data = Path(args.data).resolve()
    if not (args.data / "train-images-idx3-ubyte.gz").exists() and not (args.data / "train-images-idx3-ubyte").exists():
        print(f"device_check: no Fashion-MNIST IDX files in {args.data}; pass --data DIR "
              "(benchmarks/prepare_device_wheels.sh copies them to .whl/fashion-mnist)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    check = Check(args)
    info = machine(args.cpu)
    mode = "cpu" if args.cpu else "cuda"
    if mode == "cuda" and not info["cuda_available"]:
        print("device_check: torch sees no CUDA device; use --cpu on a machine without one", file=sys.stderr)
        return 2
    print(f"device_check ({mode}): {info}; work {args.work}", flush=True)
    if not args.skip_tiny:
        check_tiny(check)
    check_full(check)

    total = time.perf_counter() - started
    report = {"mode": mode, "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": info,
              "work": str(args.work), "total_seconds": round(total, 1), "peak_bf16_flops": PEAK_BF16_FLOPS,
              "references": {k: list(v) for k, v in check.refs.items()}, "stages": check.rows}
    header = (f"device_check ({mode}), {report['date']}: {info['gpu'] or 'no GPU'}, {info['cpus']} CPUs, "
              f"Python {info['python']}, torch {info['torch']}; {total:.0f} s in all")
    text = f"{header}\n\n{table(check.rows)}\n"
    print("\n" + text, flush=True)
    (out / "device_check.md").write_text(text)
    (out / "device_check.json").write_text(json.dumps(report, indent=1) + "\n")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(check.logs, arcname="logs")
        for logs in Path(args.work).glob("tiny/results/*/logs"):
            tar.add(logs, arcname=f"tiny_logs/{logs.parent.name}")
        for metrics in Path(args.work).glob("*/results/*/**/metrics.json"):
            tar.add(metrics, arcname=f"metrics/{metrics.relative_to(args.work)}")
    return 0 if all(row["status"] in ("ok", "not available") for row in check.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
