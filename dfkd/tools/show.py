"""`dfkd show ARTIFACT`: a human summary of any dfkd artifact, and of its provenance.

HDF5: each dataset's shape and dtype (class counts of a `labels` dataset) and the attributes.
Parquet: rows, columns (class counts of `label`, rows per `source`). JSON: the payload (metrics)
without its provenance. Torch files: the architecture and record keys; the epoch reached for a
training checkpoint. Then the provenance: stage, seed, the command that made it, config slice,
inputs with short hashes, package versions and the recorded content digest (`dfkd audit`
verifies it). `dfkd show --command ARTIFACT` prints only that command, ready to paste.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dfkd.io.artifacts import ARTIFACT_SUFFIXES, CONTENT_KEY, load_torch, open_h5, read_json
from dfkd.errors import DfkdError
from dfkd.io.provenance import COMMAND_KEY, PROVENANCE_KEY

SHORT_HASH = 12
MAX_VALUE = 200  # characters of an attribute or config shown on one line
KINDS = ("data/*.h5 and features/*.h5 (HDF5 arrays), labels/*.parquet and transfer/*.parquet (tables), "
         "*.json (metrics, distances, study tables), model.pt and checkpoint.pt (torch)")
LISTED = 8  # artifacts named when `dfkd show` is given a folder


def show(path: str | Path) -> str:
    """The summary `dfkd show` prints; DfkdError (naming the file) when missing or unreadable."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".h5": _show_h5, ".hdf5": _show_h5, ".parquet": _show_parquet, ".json": _show_json, ".pt": _show_torch}
    if path.is_dir():
        raise DfkdError(_folder_message(path))
    if suffix not in readers:
        raise DfkdError(f"{path}: `dfkd show` reads one dfkd artifact: {KINDS}; not '{suffix or path.name}' files.")
    if not path.is_file():
        raise DfkdError(f"{path} not found.")
    try:
        kind, body, provenance = readers[suffix](path)
    except DfkdError:
        raise
    except Exception as exc:  # h5py, pyarrow, json, torch: many types for a damaged file
        raise DfkdError(f"{path} cannot be read ({type(exc).__name__}: {exc}); it may be truncated.") from exc
    lines = [f"{path}: {kind}, {_size(path.stat().st_size)}", *body]
    lines += _provenance_lines(provenance)
    return "\n".join(lines)


def show_command(path: str | Path) -> str:
    """The `dfkd ...` command line recorded in an artifact's provenance, ready to paste."""
    from dfkd.tools.audit import read_provenance

    path = Path(path)
    if path.is_dir():
        raise DfkdError(_folder_message(path))
    record = read_provenance(path)
    if record is None:
        raise DfkdError(f"{path} records no provenance (not written by dfkd); no command to show.")
    command = record.get(COMMAND_KEY)
    if not command:
        raise DfkdError(f"{path} records no command: it was written by a Python call, or by a dfkd older than "
                        f"`command` in provenance; its stage is '{record.get('stage')}' (see `dfkd show {path}`).")
    return str(command)


def _folder_message(path: Path) -> str:
    """What `dfkd show` can show, for a folder given in place of a file."""
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in ARTIFACT_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    listing = ", ".join(str(p.relative_to(path)) for p in found[:LISTED])
    more = f" (+{len(found) - LISTED} more)" if len(found) > LISTED else ""
    here = f" Artifacts in it: {listing}{more}." if found else " It holds no artifacts."
    return (f"{path} is a folder; `dfkd show` summarizes one artifact file: {KINDS}.{here} "
            f"To check a whole tree use `dfkd audit {path}`.")


# ---------------------------------------------------------------------------- per format
def _show_h5(path: Path) -> tuple[str, list[str], Any]:
    import h5py

    lines = ["datasets:"]
    with open_h5(path) as handle:
        datasets: list[tuple[str, Any]] = []
        handle.visititems(lambda name, obj: datasets.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
        for name, dataset in sorted(datasets, key=lambda item: item[0]):
            lines.append(f"  {name:<12} {str(dataset.dtype):<8} {dataset.shape}")
            if name.split("/")[-1] == "labels" and dataset.ndim == 1 and dataset.dtype.kind in "iu":
                lines.append(f"  {'':<12} {_class_counts(dataset[()])}")
        if "class_targets" in handle and "teacher_labels" in handle:  # synthesised from the teacher
            agree = handle["class_targets"][()] == handle["teacher_labels"][()]
            lines.append(f"teacher label = class made for in {agree.mean():.1%} of {len(agree):,} rows"
                         if len(agree) else "no rows")
        attrs = {key: handle.attrs[key] for key in sorted(handle.attrs) if key != PROVENANCE_KEY}
        raw = handle.attrs.get(PROVENANCE_KEY)
    if not datasets:
        lines.append("  (none)")
    if attrs:
        lines.append("attrs:")
        lines += [f"  {key:<12} {_clip(_attr_text(value))}" for key, value in attrs.items()]
    return "HDF5", lines, raw


def _show_parquet(path: Path) -> tuple[str, list[str], Any]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    lines = [f"rows: {parquet.metadata.num_rows}", "columns:"]
    lines += [f"  {field.name:<12} {field.type}" for field in schema]
    names = set(schema.names)
    if "label" in names:
        labels = parquet.read(columns=["label"]).column("label").to_numpy(zero_copy_only=False)
        lines.append(f"label counts: {_class_counts(labels)}")
    if {"label", "made_for"} <= names:  # a source synthesised from the teacher
        from dfkd.stages.labels import made_for_line

        lines.append(made_for_line(parquet.read(columns=["label", "made_for"]).to_pandas()))
    if "source" in names:
        sources = parquet.read(columns=["source"]).column("source").to_pandas()
        counts = sources.value_counts(sort=False, dropna=False)
        lines.append("rows per source: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    raw = (schema.metadata or {}).get(PROVENANCE_KEY.encode())
    return "parquet table", lines, raw


def _show_json(path: Path) -> tuple[str, list[str], Any]:
    body = read_json(path, verify=False)
    if not isinstance(body, dict):
        return "JSON", [json.dumps(body, indent=2)], None
    lines = []
    for key in sorted(key for key in body if key != "provenance"):
        compact = json.dumps(body[key], sort_keys=True)
        if len(compact) <= MAX_VALUE // 2:
            lines.append(f"  {key}: {compact}")
        else:  # long values (per-epoch logs): indented, one item per line
            lines.append(f"  {key}: " + json.dumps(body[key], sort_keys=True, indent=2).replace("\n", "\n  "))
    return "JSON", ["payload:", *lines], body.get("provenance")


def _show_torch(path: Path) -> tuple[str, list[str], Any]:
    state = load_torch(path)
    lines = [f"keys: {', '.join(map(str, state))}"]
    for key in ("arch", "in_channels", "num_classes", "image_size", "mean", "std"):
        if key in state:
            lines.append(f"{key}: {state[key]}")
    weights = state.get("state_dict", state.get("model"))
    if isinstance(weights, Mapping):
        count = sum(int(v.numel()) for v in weights.values() if hasattr(v, "numel"))
        lines.append(f"weights: {len(weights)} tensors, {count:,} values")
    if "progress" in state:  # a resumable training checkpoint (dfkd.training.fit)
        progress = state["progress"] or {}
        identity = _loads(state.get("identity")) or {}
        config = identity.get("config") or {}
        block = config.get("teacher") or config.get("student") or {}
        total = f" of {block['epochs']}" if isinstance(block, Mapping) and "epochs" in block else ""
        lines.append(f"epoch: {progress.get('epoch')}{total} completed, next step {progress.get('step')}")
        last_eval = progress.get("last_eval") or {}
        if isinstance(last_eval, Mapping) and "accuracy" in last_eval:
            lines.append(f"last test accuracy: {last_eval['accuracy']:.4f}")
        if "provenance" not in state and identity:  # checkpoints record an identity instead
            inputs = {role: {"sha256": sha} for role, sha in (identity.get("inputs") or {}).items()}
            return "training checkpoint (torch)", lines, {**identity, "inputs": inputs, "_identity": True}
    kind = "model (torch)" if "state_dict" in state else "torch file"
    return kind, lines, state.get("provenance")


# ---------------------------------------------------------------------------- provenance
def _provenance_lines(raw: Any) -> list[str]:
    record = _loads(raw) if isinstance(raw, (str, bytes)) else raw
    if raw is not None and not isinstance(record, Mapping):
        return ["provenance: present but not a valid JSON record"]
    if record is None:
        return ["provenance: none recorded (not written by dfkd)"]
    identity = bool(record.get("_identity"))
    if identity:  # a training checkpoint: what a resumed run must match (no paths, no digest)
        lines = ["identity (a resumed run must match it; checkpoints carry no provenance):",
                 f"  stage     {record.get('stage')}"]
    else:
        lines = ["provenance:", f"  stage     {record.get('stage')}  (seed {record.get('seed')})"]
        if record.get(COMMAND_KEY):
            lines.append(f"  command   {record[COMMAND_KEY]}")
    config = json.dumps(record.get("config", {}), sort_keys=True, separators=(",", ":"))
    lines.append(f"  config    {_clip(config, 4 * MAX_VALUE)}")
    inputs = record.get("inputs") or {}
    if not inputs:
        lines.append("  inputs    (none)")
    for i, (role, entry) in enumerate(sorted(inputs.items(), key=lambda item: _role_order(item[0]))):
        entry = entry if isinstance(entry, Mapping) else {"path": str(entry)}
        sha = str(entry.get("sha256") or "")[:SHORT_HASH]
        where = f"  {entry['path']}" if entry.get("path") else ""
        lines.append(f"  {'inputs' if i == 0 else '':<9} {role}{where}  {sha}")
    listing = record.get("raw_listing")
    if isinstance(listing, Mapping):
        lines.append(f"  raw tree  {listing.get('root')} ({listing.get('files')} files, listing "
                     f"{str(listing.get('sha256', ''))[:SHORT_HASH]})")
    if identity:
        return lines
    digest = record.get(CONTENT_KEY)
    lines.append(f"  content   {digest[:SHORT_HASH]} (sha256 at write time; `dfkd audit` verifies it)"
                 if digest else "  content   no digest recorded")
    versions = record.get("versions") or {}
    if versions:
        lines.append("  versions  " + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())))
    return lines


def _role_order(role: str) -> tuple:
    """raw/2 before raw/10."""
    head, _, tail = role.rpartition("/")
    return (head, int(tail), "") if tail.isdigit() else (role, -1, role)


# ---------------------------------------------------------------------------- small helpers
def _class_counts(labels: np.ndarray) -> str:
    labels = np.asarray(labels).astype(np.int64)
    unknown = int((labels < 0).sum())
    counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, dtype=np.int64)
    text = "classes " + " ".join(f"{k}:{int(n)}" for k, n in enumerate(counts)) if len(counts) else "no known classes"
    return text + (f", unknown: {unknown}" if unknown else "")


def _attr_text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return np.array2string(value, threshold=20)
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _clip(text: str, limit: int = MAX_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loads(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


def _size(n: float) -> str:
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            break
    return f"{n:.1f} {unit}"
