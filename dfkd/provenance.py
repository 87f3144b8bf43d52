"""Provenance records: what made an artifact, from which inputs, with which settings.

Every artifact carries one (HDF5 attribute, parquet key-value metadata, JSON field,
checkpoint key) so that a copy taken off the cluster can still be audited by `dfkd audit`.
"""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any, Mapping

PROVENANCE_KEY = "dfkd_provenance"
_HASH_CHUNK = 1 << 22


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (streamed, so it works for multi-GB HDF5 files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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


def make_provenance(
    stage: str,
    config: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | Path] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Build the provenance record of one artifact.

    `inputs` maps a role ("teacher", "data", "labels/noise", ...) to a file path; each file
    is recorded with its path and content hash, so that `dfkd audit` can tell when an input
    changed after the artifact was made.
    """
    recorded_inputs = {
        role: {"path": str(path), "sha256": file_sha256(path)}
        for role, path in sorted((inputs or {}).items())
    }
    return {
        "stage": stage,
        "config": json.loads(json.dumps(config or {}, sort_keys=True)),
        "inputs": recorded_inputs,
        "seed": seed,
        # No timestamp or host name: the same inputs must give byte-identical artifacts.
        "versions": package_versions(),
    }


def provenance_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)
