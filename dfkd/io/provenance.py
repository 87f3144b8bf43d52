"""Provenance records: what made an artifact, from which inputs, with which settings.

Every artifact carries one (HDF5 attribute, parquet key-value metadata, JSON field,
checkpoint key) so that a copy taken off the cluster can still be audited by `dfkd audit`.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import platform
import shlex
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

PROVENANCE_KEY = "dfkd_provenance"
COMMAND_KEY = "command"  # the `dfkd ...` command line that made the artifact (CLI runs only)
_HASH_CHUNK = 1 << 22
# Set by `dfkd.cli` while a subcommand runs; artifacts written by plain Python calls record none.
_COMMAND: contextvars.ContextVar[str | None] = contextvars.ContextVar("dfkd_command", default=None)


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (streamed, so it works for multi-GB HDF5 files).

    Remembered per process for a file whose identity and stamps have not changed (a stage may
    check an input's hash and then record it: a training-features file is hashed once, not
    twice); dfkd writes every artifact by rename, so a rewritten file is a new inode."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


_HASHES: dict[tuple, str] = {}  # file_sha256's memory: (path, inode, size, mtime, ctime) -> hex digest


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour changes numbers (read without importing them)."""
    from importlib.metadata import PackageNotFoundError, version

    from dfkd import __version__

    versions = {"dfkd": __version__, "python": platform.python_version()}
    for package in ("torch", "torchvision", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def command_line(argv: Sequence[str]) -> str:
    """`dfkd ARGS...` shell-quoted, ready to paste (the program is always shown as `dfkd`:
    the console script and `python -m dfkd.cli` run the same code)."""
    return shlex.join(["dfkd", *map(str, argv)])


@contextlib.contextmanager
def recording_command(argv: Sequence[str]) -> Iterator[str]:
    """While inside, every provenance record made in this context holds `dfkd ARGV...`."""
    command = command_line(argv)
    token = _COMMAND.set(command)
    try:
        yield command
    finally:
        _COMMAND.reset(token)


def current_command() -> str | None:
    return _COMMAND.get()


def make_provenance(
    stage: str,
    config: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | Path] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Build the provenance record of one artifact.

    `inputs` maps a role ("teacher", "data", "labels/noise", ...) to a file path; each file
    is recorded with its path and content hash, so that `dfkd audit` can tell when an input
    changed after the artifact was made. Inside `recording_command` (every `dfkd` subcommand)
    the record also holds the exact command line (`command`), to re-run the stage by hand. It
    is part of the provenance, not of the payload: `content_sha256` does not cover it.
    """
    recorded_inputs = {
        role: {"path": str(path), "sha256": file_sha256(path)}
        for role, path in sorted((inputs or {}).items())
    }
    record = {
        "stage": stage,
        "config": json.loads(json.dumps(config or {}, sort_keys=True)),
        "inputs": recorded_inputs,
        "seed": seed,
        # No timestamp or host name: the same inputs must give byte-identical artifacts.
        "versions": package_versions(),
    }
    command = current_command()
    if command is not None:  # the same command and inputs still give byte-identical artifacts
        record[COMMAND_KEY] = command
    return record


def provenance_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)
