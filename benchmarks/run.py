"""Run every benchmark in turn and print their tables (about 15 minutes on 2 CPU cores).

    python benchmarks/run.py           # bench_hausdorff --quick, bench_training, bench_workflow
    python benchmarks/run.py --quick   # smaller sizes everywhere (a few minutes)
    python benchmarks/run.py --wait 25 # first wait up to 25 min for other CI/test jobs to end

It first looks for other jobs that would share the cores (pytest, snakemake, CI scripts) and
says so: numbers taken beside them are not comparable. When none runs, bench_training also
measures 2 threads. Never run as a test.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUSY_PATTERN = "ci2|pytest|snakemake"


def other_jobs() -> list[str]:
    """Command lines of processes (not this one's) that would compete for the CPU."""
    done = subprocess.run(["pgrep", "-a", "-f", BUSY_PATTERN], capture_output=True, text=True)
    mine = {os.getpid(), os.getppid()}
    return [line for line in done.stdout.splitlines() if int(line.split()[0]) not in mine]


def machine() -> str:
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        names = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")]
        model = names[0] if names else ""
    except FileNotFoundError:
        pass
    return f"{model or platform.processor() or 'unknown CPU'}, {os.cpu_count()} logical CPUs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes in every benchmark")
    parser.add_argument("--wait", type=float, default=0, help="minutes to wait for other jobs to end (default 0)")
    args = parser.parse_args()

    deadline = time.monotonic() + 60 * args.wait
    while (busy := other_jobs()) and time.monotonic() < deadline:
        print(f"waiting for {len(busy)} other job(s) to end: {busy[0][:100]}", flush=True)
        time.sleep(60)
    busy = other_jobs()
    print(f"{datetime.date.today()}  {machine()}  python {platform.python_version()}")
    if busy:
        print(f"WARNING: measuring beside {len(busy)} other job(s); times are inflated and ratios noisy:")
        for line in busy[:5]:
            print(f"  {line[:140]}")
    quick = ["--quick"] if args.quick else []
    threads = ["--threads", "1"] if busy else ["--threads", "1", "2"]
    runs = [
        ("bench_hausdorff.py", ["--quick", "--threads", "1"]),
        ("bench_training.py", quick + threads),
        ("bench_workflow.py", quick),
    ]
    failed = []
    for script, extra in runs:
        print(f"\n=== {script} {' '.join(extra)}", flush=True)
        started = time.perf_counter()
        code = subprocess.run([sys.executable, str(HERE / script), *extra]).returncode
        print(f"=== {script}: {time.perf_counter() - started:.0f} s, exit {code}", flush=True)
        if code:
            failed.append(script)
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
