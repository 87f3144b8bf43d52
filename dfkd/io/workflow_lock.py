"""Snakemake's lock, left behind by a Snakemake that was killed: removed when provably stale.

Snakemake locks the working directory (`.snakemake/locks/`) while it runs and removes the lock
when it ends. Killed for real (SIGKILL, a node that dies, an out-of-memory kill), it cannot, and
the next `snakemake --rerun-incomplete` stops with "Directory cannot be locked" until someone
runs `--unlock`. Snakemake cannot tell a stale lock from a live one: its lock files name no
process. So the workflow records its owner: each Snakemake that will lock writes
`.snakemake/dfkd_owners/{pid}@{host}` while it parses the Snakefile (before it locks), and the
next one removes the lock only when every recorded owner ran on this host and is gone. A lock
held by a live Snakemake, by one on another host (a shared folder), or with no recorded owner
(an older dfkd) is left alone, and Snakemake says what it always says.
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from dfkd.io.artifacts import process_alive

OWNERS = Path(".snakemake") / "dfkd_owners"
LOCKS = Path(".snakemake") / "locks"


def clear_stale_lock(workdir: str | Path = ".", will_lock: bool = True) -> str | None:
    """Remove the lock of a dead Snakemake (see the module docstring); record this process as
    the next owner when it will lock. Returns a line saying what was removed, else None."""
    workdir = Path(workdir)
    owners, locks = workdir / OWNERS, workdir / LOCKS
    host, me = socket.gethostname(), os.getpid()
    dead, others = [], []
    for record in sorted(owners.glob("*@*")) if owners.is_dir() else []:
        pid, _, owner_host = record.name.partition("@")
        if pid.isdigit() and owner_host == host and int(pid) != me and not process_alive(int(pid)):
            dead.append(record)
        elif not (pid.isdigit() and int(pid) == me and owner_host == host):
            others.append(record)
    lock_files = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    message = None
    if lock_files and dead and not others:
        for lock in lock_files:
            with contextlib.suppress(OSError):
                lock.unlink()
        pids = ", ".join(record.name.partition("@")[0] for record in dead)
        message = (f"dfkd: removed Snakemake's lock on {workdir.resolve()}: the Snakemake that held it "
                   f"(process {pids} on {host}) is gone (killed).")
    for record in dead:
        with contextlib.suppress(OSError):
            record.unlink()
    if will_lock:
        owners.mkdir(parents=True, exist_ok=True)
        (owners / f"{me}@{host}").touch()
    return message
