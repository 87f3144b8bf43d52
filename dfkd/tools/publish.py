"""`dfkd publish`: copy a target's measured tables into the documentation, with how they were made.

The numbers a reader sees in `docs/results/` must be the workflow's own, never typed by hand.
This copies every `tables/*.md` of a target's results folder and the error-bar figures
(`figures/{main,table1,table2,table5}.png`) into a docs folder, then writes that folder's
`README.md`: when they were copied, on which machine (the CPU model), at which dfkd commit, and
one line per table with its title and seeds (read from the table's `.json`). Files of the docs
folder that this run did not copy stay, and the index lists them as copied earlier.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

from dfkd.io.artifacts import atomic_path
from dfkd.errors import DfkdError

FIGURES = ("main", "table1", "table2", "table5")
INDEX = "README.md"


def machine() -> str:
    """The CPU model (from /proc/cpuinfo where there is one), the core count and the OS."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def commit() -> str:
    """The dfkd checkout's commit (with '+changes' when the work tree differs), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+changes" if dirty else head


def _title(markdown: Path) -> str:
    first = markdown.read_text().splitlines()[:1]
    return first[0].lstrip("# ").strip() if first else markdown.stem


def _seeds(table_json: Path) -> str:
    if not table_json.is_file():
        return "-"
    seeds = json.loads(table_json.read_text()).get("seeds")
    return f"{len(seeds)} ({', '.join(map(str, seeds))})" if seeds else "-"


def _copy(source: Path, destination: Path) -> None:
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


def publish(target_dir: Path, docs_dir: Path, note: str = "") -> list[Path]:
    """Copy the tables and figures of `target_dir` into `docs_dir` and rewrite its index.
    Returns the files copied."""
    tables_dir = Path(target_dir) / "tables"
    tables = sorted(tables_dir.glob("*.md"))
    if not tables:
        raise DfkdError(f"no tables in {tables_dir}: build them first (`snakemake all_tables`, or `snakemake` for the summary).")
    docs_dir = Path(docs_dir)
    (docs_dir / "figures").mkdir(parents=True, exist_ok=True)
    copied = []
    for table in tables:
        _copy(table, docs_dir / table.name)
        copied.append(docs_dir / table.name)
    for name in FIGURES:
        figure = Path(target_dir) / "figures" / f"{name}.png"
        if figure.is_file():
            _copy(figure, docs_dir / "figures" / figure.name)
            copied.append(docs_dir / "figures" / figure.name)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fresh = {p.name for p in copied}
    rows = ["| file | title | seeds | copied |", "|---|---|---|---|"]
    for page in sorted(p for p in docs_dir.glob("*.md") if p.name != INDEX):
        when = "this time" if page.name in fresh else "earlier (see the file)"
        rows.append(f"| [{page.name}]({page.name}) | {_title(page)} | {_seeds(tables_dir / (page.stem + '.json'))} | {when} |")
    text = (f"# Measured tables of `{Path(target_dir).name}`\n\n"
            f"Copied by `dfkd publish {target_dir} {docs_dir}` on {now}, from tables built on this machine: "
            f"{machine()}; dfkd commit {commit()}. Each table says how it was made; its CSV, JSON (every "
            "seed's value, every claim's evidence, the provenance of every file read) and LaTeX twins stay "
            f"in `{tables_dir}`.\n\n" + (f"{note}\n\n" if note else "") + "\n".join(rows) + "\n")
    with atomic_path(docs_dir / INDEX) as tmp:
        tmp.write_text(text)
    return copied
