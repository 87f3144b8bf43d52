"""What dfkd survives, measured: real kills anywhere, a full disk, damaged artifacts.

On a small workflow (Fashion-MNIST subset, one target, every stage: prepare, train_teacher, fill,
features, labels, assemble, distill, distance, tables) in a scratch folder:

1. **Kills.** One uninterrupted run is the reference. A second run is killed with SIGKILL of
   Snakemake's whole process group K times (default 8), each time at a seeded random moment
   inside a job of a stage no kill has hit yet: the harness polls Snakemake's session in /proc
   for running `dfkd <stage>` processes, aims at the earliest not-yet-hit stage running, and
   kills after a seeded delay drawn from [0, 0.8 x that stage's longest job in the reference]
   (halved each time the job ends first); while a stage is unhit after K kills, up to 4 more
   are made (all are counted). The stages reported as hit are those whose
   `dfkd` processes were alive at the instant of the kill (read from /proc just before it), not
   the ones aimed at. After every kill plain `snakemake --rerun-incomplete`
   runs again (the next kill interrupts it); after the last, it runs to the end. Then: every
   file is compared with the reference (artifacts by their recorded content digests, JSON
   payloads apart from wall-clock fields, tables and figures by bytes, log.csv without its
   seconds column, checkpoints by their model tensors); `dfkd audit` must be all ok; and no file
   may exist that the reference lacks (temporary `.tmp` files, partial fills, anything).
2. **Full disk.** The results folder is a size-limited tmpfs (mounted in a private user and
   mount namespace: `unshare --user --map-root-user --mount`; skipped with the reason where that
   is refused). The run stops at the job that met the full disk; its log must end with one line
   naming the file and "no space left"; every artifact written must audit ok and no temporary
   file may be left. Then the tmpfs is enlarged (space freed) and `snakemake --rerun-incomplete`
   must end equal to the reference.
3. **Damaged artifacts.** In a copy of the reference: bytes flipped inside the features of one
   source, a labels parquet cut in half, the teacher's model.pt overwritten with zeros. `dfkd
   audit` must name each; the next stage that reads each (its recorded command) must exit 2 with
   one line naming the file and saying to delete it and re-run. After deleting the three files,
   `snakemake --rerun-incomplete` must end equal to the reference.

    python benchmarks/bench_faults.py                 # 8 kills, seed 0, all three parts
    python benchmarks/bench_faults.py --kills 16 --seed 3 --skip-disk
Needs Fashion-MNIST at /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist).
tests/test_faults.py runs the same functions and asserts the figures. Never run as a test.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's snakemake and dfkd
FMNIST = Path("/usr/share/datasets/fashion-mnist")
WORKFLOW_FILES = ("Snakefile", "rules", "report", "envs")
TARGET = "fmnist"

# One target; every stage runs: a fill source (its own stage), a teacher with 3 epochs and students
# with 3 (a kill can land between two checkpoints), a balanced set drawing on the fill, a study table.
FAULT_CONFIG: dict[str, Any] = {
    "results": "results",
    "run_targets": [TARGET],
    "seeds": [0],
    "targets": {TARGET: {
        "dataset": {"kind": "torchvision", "name": "FashionMNIST", "root": str(FMNIST), "count": 1000},
        "channels": 1, "image_size": 32, "num_classes": 10, "mean": [0.286], "std": [0.353],
        "total": 200, "per_class": 20,
        "teacher": {"arch": "lenet5", "epochs": 3, "batch_size": 128, "optimizer": {"name": "sgd", "lr": 0.05}},
        "student": {"arch": "lenet5_half", "epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003},
                    "temperature": 20, "augment": {"flip": True}},
    }},
    "sources": {
        "noise": {"kind": "noise", "count": 300, "seed": 1},
        "noise_fill": {"kind": "fill", "generator": {"kind": "noise", "distribution": "gaussian"},
                       "budget": {"images": 4000}, "seed": 2},
    },
    "transfer_sets": {
        "noise": {"sources": ["noise"], "balanced": False},
        "noise_bal": {"sources": ["noise", "noise_fill"]},
    },
    "study": {"targets": [TARGET], "tables": {"main": {"rows": {"noise": "noise", "noise_bal": "noise_bal"}}}},
}
# `all` (summary table, figures) and the study's main table: every stage of the pipeline
TARGETS = ("all", f"results/{TARGET}/tables/main.csv")

# `dfkd <subcommand>` -> the stage it belongs to
STAGE_OF = {
    "prepare": "prepare", "train-teacher": "train_teacher", "fill": "fill", "features": "features",
    "label": "labels", "assemble": "assemble", "distill": "distill", "distance": "distance",
    "report": "tables", "table": "tables", "plot-counts": "tables", "plot-curves": "tables",
    "plot-table": "tables",
}
# the stages aimed at, in pipeline order (labels runs too, between features and assemble)
SCHEDULE = ("prepare", "train_teacher", "fill", "features", "assemble", "distill", "distance", "tables")
STAGES = (*SCHEDULE, "labels")
BENCHMARK_STAGE = {"prepare": "prepare", "train_teacher.tsv": "train_teacher", "fill": "fill",
                   "features": "features", "labels": "labels", "assemble": "assemble", "distill": "distill",
                   "distance": "distance"}
ARTIFACT_SUFFIXES = (".h5", ".parquet", ".json", ".pt")
NOT_COMPARED = ("logs", "benchmarks")  # per-job logs and Snakemake's timings: names compared, not content


# ---------------------------------------------------------------------------- running Snakemake
def write_workdir(folder: Path, config: dict | None = None) -> Path:
    """A working directory holding the workflow files and the fault config as config.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, folder / name)
    (folder / "config.yaml").write_text(yaml.safe_dump(config or FAULT_CONFIG, sort_keys=False))
    return folder


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # Snakemake and every dfkd job import this checkout (not another one an editable install names)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("CUDA_VISIBLE_DEVICES", "")  # the reference and the faulted runs on one device
    return env


def snakemake_command(*extra: str, cores: int = 2) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--workflow-profile", "none", "--cores", str(cores), *extra, *TARGETS]


def run_snakemake(workdir: Path, *extra: str, cores: int = 2, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(*extra, cores=cores), cwd=workdir, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def must_succeed(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")


def reference_run(workdir: Path) -> Path:
    """The uninterrupted run; returns its results folder."""
    write_workdir(workdir)
    must_succeed(run_snakemake(workdir), "the reference run")
    return workdir / "results"


def job_seconds(results: Path) -> dict[str, float]:
    """Each stage's longest job in a finished run (Snakemake's benchmark files), in seconds."""
    longest: dict[str, float] = {}
    for tsv in (results / TARGET / "benchmarks").rglob("*.tsv"):
        relative = tsv.relative_to(results / TARGET / "benchmarks")
        stage = BENCHMARK_STAGE.get(relative.parts[0])
        lines = tsv.read_text().splitlines()
        if stage and len(lines) > 1:
            longest[stage] = max(longest.get(stage, 0.0), float(lines[1].split("\t")[0]))
    return longest


# ---------------------------------------------------------------------------- processes
def _stat(pid: str) -> tuple[int, int] | None:
    """(process group, session) of a live process; None when it is gone or a zombie (dead, unreaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in "ZX" else (int(fields[2]), int(fields[3]))
    except (OSError, IndexError, ValueError):
        return None


def session_processes(sid: int) -> list[int]:
    """The live processes of a session."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(entry)
            if stat is not None and stat[1] == sid:
                found.append(int(entry))
    return found


def dfkd_subcommand(pid: int) -> str | None:
    """The subcommand of a running `dfkd` (console script or python -m dfkd.cli), else None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    argv = [a.decode(errors="replace") for a in argv if a]
    for i, arg in enumerate(argv[:-1]):
        if os.path.basename(arg) == "dfkd" or arg == "dfkd.cli":
            return argv[i + 1]
    return None


def stages_running(sid: int) -> list[str]:
    stages = {STAGE_OF.get(sub, sub) for pid in session_processes(sid) if (sub := dfkd_subcommand(pid))}
    return sorted(stages)


def kill_campaign(workdir: Path, kills: int = 8, seed: int = 0, seconds: dict[str, float] | None = None,
                  say: Callable[[str], None] = print, timeout: float = 600, max_kills: int | None = None) -> dict[str, Any]:
    """`kills` real kills (see the module docstring), more (up to `max_kills`, default kills + 4) while a
    stage is still unhit, then a run to the end. Returns what happened."""
    max_kills = kills + 4 if max_kills is None else max_kills
    write_workdir(workdir)
    rng = random.Random(seed)
    seconds = seconds or {}
    window = {stage: 0.8 * seconds.get(stage, 1.5) for stage in STAGES}
    unhit = list(SCHEDULE)  # stages no kill has interrupted yet
    records = []
    number = 0
    while number < kills or (unhit and number < max_kills):  # past `kills` only until every stage is hit
        with open(workdir / f"snakemake.kill{number}.out", "w") as out:
            process = subprocess.Popen(snakemake_command("--rerun-incomplete"), cwd=workdir, env=child_env(),
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            record: dict[str, Any] = {"aim": None, "hit": None, "delay_s": None, "escaped": 0}
            aim, seen, delay, deadline = None, 0.0, 0.0, time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                running = stages_running(process.pid)
                if aim is not None and aim not in running:  # its job ended first: kill sooner in the next
                    window[aim] /= 2
                    aim = None
                # the earliest not-yet-hit stage running (a stage of one job, as fill, must not end unhit
                # while another is aimed at), else once every stage is hit any stage running
                candidates = [stage for stage in unhit if stage in running] if unhit else running
                if candidates and (aim is None or (unhit and candidates[0] != aim)):
                    aim, seen = (candidates[0] if unhit else rng.choice(candidates)), time.monotonic()
                    delay = rng.uniform(0.0, window[aim])
                    record.update(aim=aim, delay_s=round(delay, 3))
                if aim is not None and time.monotonic() >= seen + delay:
                    record["hit"] = stages_running(process.pid)  # what the kill interrupts
                    os.killpg(process.pid, signal.SIGKILL)
                    break
                time.sleep(0.005)
            if record["hit"] is None and process.poll() is None:  # past the deadline: kill where it stands
                record["hit"] = stages_running(process.pid)
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
            # a process of the session outside Snakemake's process group would survive the group kill
            escaped = [pid for pid in session_processes(process.pid) if (_stat(str(pid)) or (0, 0))[0] != process.pid]
            for pid in escaped:
                with _suppress():
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(process.pid)
            record["escaped"] = len(escaped)
            record["exit"] = process.returncode
        unhit = [stage for stage in unhit if stage not in (record["hit"] or [])]
        if record["hit"] is None:
            if process.returncode != 0:
                raise RuntimeError(f"kill {number}: snakemake failed on its own (exit {process.returncode}), "
                                   f"see {workdir / f'snakemake.kill{number}.out'}:\n"
                                   + (workdir / f"snakemake.kill{number}.out").read_text()[-4000:])
            say(f"kill {number + 1}: the run finished before a job of {', '.join(unhit) or 'any stage'} ran")
        else:
            say(f"kill {number + 1}: aimed at {record['aim']}, {record['delay_s']} s after its job started; "
                f"running then: {', '.join(record['hit']) or 'no dfkd job (Snakemake between jobs)'}")
        records.append(record)
        number += 1
    final = run_snakemake(workdir, "--rerun-incomplete", timeout=timeout)
    must_succeed(final, "the run after the last kill")
    hits = [stage for record in records for stage in (record["hit"] or [])]
    return {
        "kills": sum(record["hit"] is not None for record in records),
        "records": records,
        "stages_hit": sorted(set(hits), key=lambda stage: STAGES.index(stage) if stage in STAGES else len(STAGES)),
        "kills_per_stage": {stage: hits.count(stage) for stage in dict.fromkeys(hits)},
        "between_jobs": sum(record["hit"] == [] for record in records),
        "escaped": sum(record["escaped"] for record in records),
        "stale_lock_removed": "removed Snakemake's lock" in final.stderr + final.stdout,
    }


def _wait_gone(sid: int, seconds: float = 30) -> None:
    """Until no process of the session is left (killed ones vanish once reaped)."""
    deadline = time.monotonic() + seconds
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.05)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


# ---------------------------------------------------------------------------- comparing trees
WALL_CLOCK = re.compile(r"seconds|per_second")


def _without_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall_clock(v) for k, v in value.items() if k != "provenance" and not WALL_CLOCK.search(k)}
    if isinstance(value, list):
        return [_without_wall_clock(v) for v in value]
    return value


def _recorded_digest(path: Path) -> str | None:
    from dfkd.tools.audit import read_provenance

    record = read_provenance(path) or {}
    return record.get("content_sha256")


def _same(a: Path, b: Path) -> tuple[bool, str]:
    """Whether two files of the same name hold the same content, and how that was decided."""
    if a.name == "checkpoint.pt":
        import torch

        from dfkd.io.artifacts import load_torch

        wa, wb = load_torch(a)["model"], load_torch(b)["model"]
        return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "model tensors"
    if a.suffix in ARTIFACT_SUFFIXES:
        if _recorded_digest(a) == _recorded_digest(b) is not None:
            return True, "content digest"
        if a.suffix == ".json":  # timings differ between any two runs
            return (_without_wall_clock(json.loads(a.read_text())) == _without_wall_clock(json.loads(b.read_text())),
                    "payload apart from wall-clock fields")
        return False, "content digest"
    if a.name == "log.csv":
        import pandas as pd

        fa, fb = pd.read_csv(a), pd.read_csv(b)
        return fa.drop(columns="seconds").equals(fb.drop(columns="seconds")), "log without its seconds column"
    if a.suffix == ".md":
        mask = lambda p: re.sub(r"[\d,.]+ images/s", "N images/s", p.read_text())  # noqa: E731
        return mask(a) == mask(b), "text apart from images/s"
    return a.read_bytes() == b.read_bytes(), "bytes"


def compare_trees(reference: Path, run: Path) -> dict[str, Any]:
    """Every file of `run` against `reference` (two results folders)."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    ref_files, run_files = files(reference), files(run)
    compared, differences, how = 0, [], {}
    for name in sorted(ref_files & run_files):
        if Path(name).parts[1:2] and Path(name).parts[1] in NOT_COMPARED:
            continue
        same, method = _same(reference / name, run / name)
        compared += 1
        how[method] = how.get(method, 0) + 1
        if not same:
            differences.append(f"{name} ({method})")
    return {"compared": compared, "by": how, "differences": differences,
            "left_over": sorted(run_files - ref_files), "missing": sorted(ref_files - run_files)}


def audit(results: Path, cwd: Path) -> dict[str, str]:
    """`dfkd audit --json` of a results folder: {path: status}."""
    done = subprocess.run([sys.executable, "-m", "dfkd.cli", "audit", str(results), "--json"], cwd=cwd,
                          env=child_env(), capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"dfkd audit failed (exit {done.returncode}): {done.stderr[-3000:]}")
    return {entry["path"]: entry["status"] for entry in json.loads(done.stdout)}


# ---------------------------------------------------------------------------- a full disk
NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount"]
MOUNT_FAILED = 77


def disk_full(workdir: Path, size_bytes: int, timeout: float = 900) -> dict[str, Any]:
    """Results on a tmpfs of `size_bytes`: the first run meets the full disk; then the tmpfs grows
    and the run resumes. Runs in a private mount namespace; the results are copied out to
    `workdir/results_after` for comparison. {"skipped": reason} where no tmpfs can be mounted."""
    if shutil.which("unshare") is None:
        return {"skipped": "unshare (util-linux) not found"}
    write_workdir(workdir)
    command = [*NAMESPACE, sys.executable, str(Path(__file__).resolve()), "_disk_full_inner", str(workdir),
               str(size_bytes)]
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode == MOUNT_FAILED or (done.returncode != 0 and "unshare:" in done.stderr):
        return {"skipped": "cannot mount a tmpfs in a user namespace here: " + " ".join(done.stderr.split())[-300:]}
    if done.returncode != 0:
        raise RuntimeError(f"disk-full run failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return json.loads((workdir / "disk_full.json").read_text())


def _disk_full_inner(workdir: Path, size_bytes: int) -> int:
    """Inside the namespace: mount, run, look, grow, re-run, copy out."""
    results = workdir / "results"
    results.mkdir(exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(results)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        print(mount.stderr, file=sys.stderr)
        return MOUNT_FAILED
    first = run_snakemake(workdir, cores=1)
    output = first.stdout + first.stderr
    failed = re.findall(r"Error in rule (\w+):.*?\n\s+log: (\S+)", output, re.DOTALL)
    facts: dict[str, Any] = {"size_bytes": size_bytes, "first_exit": first.returncode,
                             "failed_jobs": [{"rule": rule, "log": log} for rule, log in failed]}
    for job in facts["failed_jobs"]:
        lines = (workdir / job["log"]).read_text().splitlines() if (workdir / job["log"]).is_file() else []
        job["last_line"] = lines[-1] if lines else ""
        job["traceback"] = any("Traceback" in line for line in lines)
    statuses = audit(results, workdir)
    facts["artifacts_after_failure"] = len(statuses)
    facts["not_ok_after_failure"] = {p: s for p, s in statuses.items() if s != "ok"}
    facts["hidden_after_failure"] = sorted(str(p.relative_to(results)) for p in results.rglob(".*"))
    facts["used_bytes"] = shutil.disk_usage(results).used
    subprocess.run(["mount", "-o", "remount,size=1g", str(results)], check=True)  # space freed
    second = run_snakemake(workdir, "--rerun-incomplete")
    facts["second_exit"] = second.returncode
    facts["second_tail"] = (second.stdout + second.stderr)[-2000:] if second.returncode else ""
    shutil.copytree(results, workdir / "results_after", symlinks=True)
    (workdir / "disk_full.json").write_text(json.dumps(facts, indent=2))
    return 0


# ---------------------------------------------------------------------------- damaged artifacts
def _command_reading(results: Path, damaged: Path) -> tuple[str, Path]:
    """The recorded command of an artifact made from `damaged`, and that artifact."""
    from dfkd.tools.audit import read_provenance

    relative = str(damaged.relative_to(results.parent))
    for path in sorted(results.rglob("*")):
        if path.suffix in ARTIFACT_SUFFIXES and path.name != "checkpoint.pt" and path != damaged:
            record = read_provenance(path) or {}
            if any(i.get("path") == relative for i in (record.get("inputs") or {}).values()) and record.get("command"):
                return record["command"], path
    raise RuntimeError(f"no artifact records {relative} as an input")


def damage(path: Path, how: str, rng: random.Random) -> str:
    """Flip bytes inside a features file's data, cut a file in half, or overwrite it with zeros."""
    if how == "flip":
        import h5py

        with h5py.File(path, "r") as handle:
            dataset = handle["features"]
            chunk = dataset.id.get_chunk_info(0) if dataset.chunks else None
            start, size = (chunk.byte_offset, chunk.size) if chunk else (dataset.id.get_offset(), dataset.id.get_storage_size())
        data = bytearray(path.read_bytes())
        offsets = sorted(rng.sample(range(start, start + size), 4))
        for offset in offsets:
            data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        return f"4 bytes flipped in /features (offsets {offsets})"
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return f"cut to {len(data) // 2} of {len(data)} bytes"
    size = path.stat().st_size
    path.write_bytes(bytes(size))
    return f"{size} bytes, all zero"


DAMAGES = ((f"{TARGET}/features/noise.h5", "flip"), (f"{TARGET}/labels/noise_fill.parquet", "truncate"),
           (f"{TARGET}/teacher/model.pt", "zeros"))


def damaged_artifacts(reference_workdir: Path, workdir: Path, seed: int = 0) -> dict[str, Any]:
    """Damage three artifacts of a copy of the reference; audit; run their next stages; delete; re-run."""
    shutil.copytree(reference_workdir, workdir, symlinks=True)
    results = workdir / "results"
    rng = random.Random(seed)
    cases = []
    for relative, how in DAMAGES:
        path = results / relative
        command, made = _command_reading(results, path)
        cases.append({"file": relative, "how": how, "command": command, "output": str(made.relative_to(workdir)),
                      "output_bytes": made.read_bytes()})
    for case in cases:
        case["damage"] = damage(results / case["file"], case["how"], rng)
    statuses = audit(results, workdir)
    for case in cases:
        case["audit"] = statuses.get(str(results / case["file"]), statuses.get(f"results/{case['file']}"))
        argv = case["command"].split()
        assert argv[0] == "dfkd"
        done = subprocess.run([sys.executable, "-m", "dfkd.cli", *_shell_split(case["command"])[1:]], cwd=workdir,
                              env=child_env(), capture_output=True, text=True, timeout=600)
        case["exit"] = done.returncode
        case["stderr"] = done.stderr.strip()
        case["output_unchanged"] = (workdir / case["output"]).read_bytes() == case.pop("output_bytes")
    # what the error says: delete, re-make it (`snakemake FILE`), then `snakemake` re-runs what follows
    for case in cases:
        (results / case["file"]).unlink()
    files = [f"results/{case['file']}" for case in cases]
    remake = subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "none", "--cores", "2", *files],
                            cwd=workdir, env=child_env(), capture_output=True, text=True, timeout=900)
    must_succeed(remake, "snakemake of the deleted files")
    rerun = run_snakemake(workdir, "--rerun-incomplete")
    must_succeed(rerun, "the re-run after re-making the damaged files")
    return {"cases": cases}


def _shell_split(command: str) -> list[str]:
    import shlex

    return shlex.split(command)


def one_clean_line(text: str, *names: str) -> bool:
    """One line, no traceback, naming each of `names`."""
    return len(text.splitlines()) == 1 and "Traceback" not in text and all(n in text for n in names)


# ---------------------------------------------------------------------------- the whole measurement
def main(argv: list[str] | None = None) -> int:
    if argv and argv[0] == "_disk_full_inner":
        return _disk_full_inner(Path(argv[1]), int(argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs (default 8: one per stage)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments and the flipped bytes")
    parser.add_argument("--skip-disk", action="store_true", help="no full-disk part")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    args = parser.parse_args(argv)
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        print(f"Fashion-MNIST not found at {FMNIST}", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="dfkd-faults-"))
    started = time.monotonic()
    try:
        reference = reference_run(scratch / "reference")
        print(f"reference run: {time.monotonic() - started:.0f} s")
        kills = kill_campaign(scratch / "killed", args.kills, args.seed, job_seconds(reference))
        compared = compare_trees(reference, scratch / "killed" / "results")
        statuses = audit(scratch / "killed" / "results", scratch / "killed")
        bad = {p: s for p, s in statuses.items() if s != "ok"}
        print(f"\nkills (SIGKILL of Snakemake's process group): {kills['kills']}")
        per_stage = ", ".join(f"{stage} x{kills['kills_per_stage'][stage]}" for stage in kills["stages_hit"])
        print(f"stages hit: {len(kills['stages_hit'])} ({per_stage})"
              + (f"; {kills['between_jobs']} kill(s) between jobs" if kills["between_jobs"] else ""))
        print(f"processes that escaped the group kill: {kills['escaped']}")
        print(f"artifacts compared: {compared['compared']} ({', '.join(f'{n} by {m}' for m, n in compared['by'].items())})")
        print(f"differences: {len(compared['differences'])} {compared['differences'] or ''}")
        print(f"files left over: {len(compared['left_over'])} {compared['left_over'] or ''}; "
              f"missing: {len(compared['missing'])} {compared['missing'] or ''}")
        print(f"dfkd audit: {len(statuses) - len(bad)} of {len(statuses)} ok {bad or ''}")
        if not args.skip_disk:
            size = 3 * 2**20
            full = disk_full(scratch / "disk", size)
            if "skipped" in full:
                print(f"\nfull disk: skipped ({full['skipped']})")
            else:
                after = compare_trees(reference, scratch / "disk" / "results_after")
                print(f"\nfull disk (results on a {size // 2**20} MiB tmpfs): failing job(s): "
                      + "; ".join(f"{j['rule']}: \"{j['last_line']}\"" for j in full["failed_jobs"]))
                print(f"  after the failure: {full['artifacts_after_failure']} artifacts, "
                      f"{len(full['not_ok_after_failure'])} not ok {full['not_ok_after_failure'] or ''}, "
                      f"{len(full['hidden_after_failure'])} temporary files {full['hidden_after_failure'] or ''}")
                print(f"  after freeing space: re-run exit {full['second_exit']}, {after['compared']} compared, "
                      f"{len(after['differences'])} differences, {len(after['left_over'])} left over")
        hurt = damaged_artifacts(scratch / "reference", scratch / "damaged", args.seed)
        again = compare_trees(reference, scratch / "damaged" / "results")
        print("\ndamaged artifacts:")
        for case in hurt["cases"]:
            print(f"  {case['file']} ({case['damage']}): audit {case['audit']}; `{case['command'].split(' --')[0]}` "
                  f"exit {case['exit']}: {case['stderr']}")
        print(f"  deleted and re-run: {again['compared']} compared, {len(again['differences'])} differences, "
              f"{len(again['left_over'])} left over")
        print(f"\ntotal: {time.monotonic() - started:.0f} s")
    finally:
        if args.keep:
            print(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
