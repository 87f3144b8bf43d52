"""`dfkd audit`: check a results tree against the provenance its artifacts record.

Every artifact (HDF5, parquet, JSON, torch file) records the stage that made it, the paths and
sha256 of its inputs, and the digest of its own content (`content_sha256`). An audit reports
for each artifact one status:

- `ok`: its content matches its digest and all its inputs are unchanged and ok themselves;
- `modified`: its content differs from the recorded digest (edited after it was written);
- `stale`: an input's current sha256 differs from the recorded one, or an input artifact is
  itself modified, stale, missing an input or unreadable (so editing `data/noise.h5` makes
  every artifact downstream of it stale, transitively);
- `missing input`: a recorded input (or a prepared source's raw image tree) is gone;
- `unreadable`: the file cannot be parsed (truncated, not HDF5/parquet/JSON/torch);
- `no provenance`: a file of an artifact type that records none (not written by dfkd).

Files that are not artifacts (CSV, TSV, logs, figures, tables) and the resumable
`checkpoint.pt` files (training state, not a workflow output; its `identity` records input
hashes but no paths) carry no provenance: they are listed as `untracked` with `--all` only, and
never fail an audit. Hidden files and folders (`.snakemake`, atomic-write temporaries) are
skipped. Artifacts written before dfkd recorded content digests are checked through their
inputs only.

Recorded input paths are relative to the folder Snakemake ran in. They are resolved against
ROOT's parent folder and its ancestors first (so a results tree copied elsewhere together with
its parent folder audits against itself, not against the original), then against the current
directory. Every file is hashed at most once per audit.

`dfkd audit --lineage FILE` without ROOT finds the results folder from FILE itself: the folder
above its `{target}/` folder (`results/{target}/features/noise.h5` -> `results`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from dfkd.io.artifacts import ARTIFACT_SUFFIXES, CONTENT_KEY, content_digest, load_torch, open_h5, read_json
from dfkd.errors import DfkdError
from dfkd.io.provenance import PROVENANCE_KEY, file_sha256

# Headline statuses, worst first (an artifact gets the worst that applies).
STATUSES = ("unreadable", "no provenance", "modified", "missing input", "stale", "ok", "untracked")
# An input in one of these states makes everything made from it stale. (An input without
# provenance is a raw file: only its hash is checked.)
PROPAGATES = frozenset({"unreadable", "modified", "missing input", "stale"})
NOT_ARTIFACTS = frozenset({"checkpoint.pt"})  # dfkd.training.CHECKPOINT: resume state, no provenance
# The folders of a target's results (CONTRACTS.md): results/{target}/{one of these}/...
STAGE_FOLDERS = frozenset({"data", "teacher", "features", "labels", "transfer", "students", "distance",
                           "tables", "figures", "logs", "benchmarks"})


def is_artifact(path: Path) -> bool:
    """Whether `path` is a kind of file that dfkd writes with provenance."""
    return path.suffix.lower() in ARTIFACT_SUFFIXES and path.name not in NOT_ARTIFACTS


# ---------------------------------------------------------------------------- reading provenance
def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance record of any artifact, None when it has none; DfkdError when unreadable."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DfkdError(f"{path} not found.")
    try:
        if suffix in (".h5", ".hdf5"):
            with open_h5(path) as handle:
                raw = handle.attrs.get(PROVENANCE_KEY)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            raw = (pq.read_schema(path).metadata or {}).get(PROVENANCE_KEY.encode())
        elif suffix == ".json":
            body = read_json(path, verify=False)
            raw = body.get("provenance") if isinstance(body, dict) else None
        elif suffix == ".pt":
            raw = load_torch(path).get("provenance")
        else:
            raise DfkdError(f"{path}: dfkd artifacts are {', '.join(ARTIFACT_SUFFIXES)} files, not '{suffix}'.")
        if raw is None or isinstance(raw, dict):
            return raw
        record = json.loads(raw)
    except DfkdError:
        raise
    except Exception as exc:  # pyarrow, h5py, json: many types for a damaged file
        raise DfkdError(f"{path} cannot be read ({type(exc).__name__}: {exc}); it may be truncated.") from exc
    if not isinstance(record, dict):
        raise DfkdError(f"{path}: its provenance is a {type(record).__name__}, not a record.")
    return record


# ---------------------------------------------------------------------------- the audit
@dataclass
class InputCheck:
    """One recorded input of an artifact, as found now."""

    role: str
    recorded_path: str
    recorded_sha256: str | None
    resolved: Path | None  # None: not found
    state: str  # ok | changed | missing
    upstream: str | None = None  # the input's own audit status when it is an artifact


@dataclass
class Entry:
    """The audit result of one file."""

    path: Path
    status: str
    reasons: list[str] = field(default_factory=list)
    stage: str | None = None
    inputs: list[InputCheck] = field(default_factory=list)
    content_checked: bool = False
    raw_listing: dict[str, Any] | None = None  # prepare's digest of a large raw tree, as checked


class Auditor:
    """Checks artifacts against their provenance; memoizes statuses and file hashes by path."""

    def __init__(self, root: str | Path, cwd: str | Path | None = None):
        self.root = Path(root)
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()
        absolute = Path(os.path.abspath(self.root))
        self.anchors = [*absolute.parents, self.cwd]
        self._sha256: dict[Path, str] = {}
        self._entries: dict[Path, Entry | None] = {}

    # ------------------------------------------------------------------ helpers
    def display(self, path: Path | str) -> str:
        """A path as the user would type it: relative to the current directory when inside it."""
        path = Path(path)
        try:
            return str(Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(self.cwd))))
        except ValueError:
            return str(path)

    def resolve(self, recorded: str) -> Path | None:
        """Where a recorded input path is now (see the module docstring), or None."""
        path = Path(recorded)
        if path.is_absolute():
            return path if path.exists() else None
        for anchor in self.anchors:
            candidate = anchor / path
            if candidate.exists():
                return candidate
        return None

    def sha256(self, path: Path) -> str:
        key = Path(os.path.abspath(path))
        if key not in self._sha256:
            self._sha256[key] = file_sha256(key)
        return self._sha256[key]

    # ------------------------------------------------------------------ one artifact
    def check(self, path: str | Path) -> Entry:
        """Audit one artifact (and, recursively, the artifacts it was made from)."""
        path = Path(path)
        key = Path(os.path.abspath(path))
        if key in self._entries:
            entry = self._entries[key]
            # None: a cycle in recorded inputs (impossible for dfkd's DAG); do not recurse again.
            return entry if entry is not None else Entry(path, "ok")
        self._entries[key] = None
        entry = self._check(path)
        self._entries[key] = entry
        return entry

    def _check(self, path: Path) -> Entry:
        if not is_artifact(path):
            return Entry(path, "untracked", [f"{path.suffix or 'no suffix'} files carry no provenance"])
        try:
            provenance = read_provenance(path)
        except DfkdError as exc:
            return Entry(path, "unreadable", [_short(str(exc))])
        if provenance is None:
            return Entry(path, "no provenance", ["written without a dfkd provenance record"])
        entry = Entry(path, "ok", stage=provenance.get("stage"))
        flags: set[str] = set()

        recorded = provenance.get(CONTENT_KEY)
        if recorded is not None:
            try:
                current = content_digest(path)
            except DfkdError as exc:
                return Entry(path, "unreadable", [_short(str(exc))], stage=entry.stage)
            entry.content_checked = True
            if current != recorded:
                flags.add("modified")
                entry.reasons.append("content differs from its recorded digest (edited after it was written)")

        for role, record in sorted((provenance.get("inputs") or {}).items()):
            check = self._check_input(role, record)
            entry.inputs.append(check)
            shown = self.display(check.resolved) if check.resolved else check.recorded_path
            if check.state == "missing":
                flags.add("missing input")
                entry.reasons.append(f"input '{role}' missing: {check.recorded_path}")
            elif check.state == "changed":
                flags.add("stale")
                upstream = f" ({check.upstream})" if check.upstream in PROPAGATES else ""
                entry.reasons.append(f"input '{role}' changed since recorded: {shown}{upstream}")
            elif check.upstream in PROPAGATES:
                flags.add("stale")
                entry.reasons.append(f"input '{role}' is {check.upstream}: {shown}")

        if "raw_listing" in provenance:
            entry.raw_listing, reason, flag = _check_raw_listing(provenance)
            if flag:
                flags.add(flag)
                entry.reasons.append(reason)
        entry.status = next((status for status in STATUSES if status in flags), "ok")
        return entry

    def _check_input(self, role: str, record: Any) -> InputCheck:
        record = record if isinstance(record, dict) else {"path": str(record)}
        recorded_path, recorded_sha = str(record.get("path")), record.get("sha256")
        resolved = self.resolve(recorded_path)
        if resolved is None or not resolved.is_file():
            return InputCheck(role, recorded_path, recorded_sha, None, "missing")
        state = "ok" if recorded_sha is None or self.sha256(resolved) == recorded_sha else "changed"
        upstream = self.check(resolved).status if is_artifact(resolved) else None
        return InputCheck(role, recorded_path, recorded_sha, resolved, state, upstream)

    # ------------------------------------------------------------------ a tree
    def files(self, include_untracked: bool = False) -> Iterator[Path]:
        """The files under ROOT that an audit lists, in sorted order; hidden ones skipped."""
        if self.root.is_file():
            yield self.root
            return
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(folder) / name
                if not name.startswith(".") and (include_untracked or is_artifact(path)):
                    yield path

    def checked(self) -> list[Entry]:
        """Every artifact checked so far (those listed and their upstream), sorted by path."""
        return sorted((e for e in self._entries.values() if e is not None), key=lambda e: str(e.path))

    def audit(self, include_untracked: bool = False) -> list[Entry]:
        return [self.check(path) for path in self.files(include_untracked)]


def _check_raw_listing(provenance: dict) -> tuple[dict, str, str | None]:
    """Re-list a large raw tree that `prepare` recorded by a listing digest (path, size, mtime)."""
    listing = dict(provenance["raw_listing"])
    root = Path(str(listing.get("root")))
    if not root.is_dir():
        listing["state"] = "missing"
        return listing, f"raw image tree missing: {root}", "missing input"
    try:
        from dfkd.sources import validate_source_config
        from dfkd.sources.imagefolder import listing_digest

        config = provenance.get("config") or {}
        kind, args = validate_source_config(config["source"])
        files = list(kind.input_files(args, config.get("split")))
        current = listing_digest(root, files)
    except (DfkdError, KeyError, TypeError, OSError, ValueError) as exc:
        listing["state"] = "unchecked"
        return listing, f"raw image tree {root} not re-listed ({_short(str(exc))})", None
    if current == listing.get("sha256"):
        listing["state"] = "ok"
        return listing, "", None
    listing["state"] = "changed"
    return listing, f"raw image tree changed since recorded (files, sizes or mtimes): {root}", "stale"


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------- reporting
def entry_json(auditor: Auditor, entry: Entry) -> dict[str, Any]:
    return {
        "path": auditor.display(entry.path),
        "status": entry.status,
        "reasons": entry.reasons,
        "stage": entry.stage,
        "content_checked": entry.content_checked,
        "inputs": [
            {"role": check.role, "path": check.recorded_path,
             "resolved": auditor.display(check.resolved) if check.resolved else None,
             "sha256": check.recorded_sha256, "state": check.state, "upstream": check.upstream}
            for check in entry.inputs
        ],
        **({"raw_listing": entry.raw_listing} if entry.raw_listing else {}),
    }


def format_report(auditor: Auditor, entries: list[Entry]) -> str:
    width = max(len(status) for status in STATUSES)
    lines = []
    for entry in entries:
        line = f"{entry.status:<{width}}  {auditor.display(entry.path)}"
        if entry.reasons and entry.status != "ok":
            line += f"  ({'; '.join(entry.reasons)})"
        lines.append(line)
    counts = {status: sum(entry.status == status for entry in entries) for status in STATUSES}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no artifacts"
    lines.append(f"audit of {auditor.display(auditor.root)}: {summary}")
    unchecked = sum(entry.status != "untracked" and not entry.content_checked and entry.stage is not None
                    for entry in entries)
    if unchecked:
        lines.append(f"{unchecked} artifact(s) record no content digest (written by an older dfkd): "
                     "only their inputs were checked.")
    return "\n".join(lines)


def lineage_lines(auditor: Auditor, path: str | Path) -> list[str]:
    """The chain from an artifact back to its raw sources, one indented line per node."""
    path = Path(path)
    root_entry = auditor.check(path)
    lines = [f"{auditor.display(path)}  [{_node_label(root_entry)}]"]
    expanded: set[Path] = {Path(os.path.abspath(path))}

    def walk(entry: Entry, depth: int) -> None:
        indent = "  " * depth + "<- "
        for check in entry.inputs:
            if check.resolved is None:
                lines.append(f"{indent}{check.role}: {check.recorded_path}  [missing]")
                continue
            label = f"{indent}{check.role}: {auditor.display(check.resolved)}"
            changed = ", changed since recorded" if check.state == "changed" else ""
            if not is_artifact(check.resolved):
                state = "changed" if check.state == "changed" else "ok"
                lines.append(f"{label}  [raw source, {state}]")
                continue
            child = auditor.check(check.resolved)
            key = Path(os.path.abspath(check.resolved))
            again = key in expanded and (child.inputs or child.raw_listing)
            lines.append(f"{label}  [{_node_label(child)}{changed}]" + ("  (inputs shown above)" if again else ""))
            if not again:
                expanded.add(key)
                walk(child, depth + 1)
        if entry.raw_listing:
            listing = entry.raw_listing
            lines.append(f"{indent}raw tree: {listing.get('root')} ({listing.get('files')} files)  "
                         f"[raw source, {listing.get('state', 'unchecked')}]")

    walk(root_entry, 1)
    return lines


def results_root_of(path: str | Path) -> Path:
    """The results folder that holds an artifact: the parent of its `{target}/` folder.

    The nearest ancestor named like a stage folder (data, features, students, ...) sits in the
    target's folder, whose parent is the root; a run folder named like a stage folder
    (`students/data/`) is skipped. A file outside that layout gives its own folder.
    """
    path = Path(os.path.abspath(path))
    for folder in path.parents:
        if folder.name in STAGE_FOLDERS and folder.parent.name != "students" and len(folder.parents) >= 2:
            return folder.parent.parent
    return path.parent


def _node_label(entry: Entry) -> str:
    return f"{entry.stage or 'no stage'}, {entry.status}"


def run_audit(root: str | Path | None = "results", as_json: bool = False, lineage: str | Path | None = None,
              include_untracked: bool = False) -> tuple[str, int]:
    """The text `dfkd audit` prints and its exit code (0: all ok, 1: anything else).

    `root` None: the lineage file's results folder (`results_root_of`), else `results`.
    """
    if root is None:
        root = results_root_of(lineage) if lineage is not None and Path(lineage).is_file() else "results"
    root = Path(root)
    if not root.exists():
        raise DfkdError(f"results folder {root} not found. Pass the folder to audit: `dfkd audit RESULTS_DIR`.")
    auditor = Auditor(root)
    if lineage is not None:
        lineage = Path(lineage)
        if not lineage.is_file():
            raise DfkdError(f"--lineage: {lineage} not found.")
        if not is_artifact(lineage):
            raise DfkdError(f"--lineage: {lineage} is not a dfkd artifact ({', '.join(ARTIFACT_SUFFIXES)}).")
        entry = auditor.check(lineage)
        code = 0 if entry.status == "ok" else 1
        if as_json:
            return json.dumps([entry_json(auditor, e) for e in auditor.checked()], indent=2), code
        return "\n".join(lineage_lines(auditor, lineage)), code
    entries = auditor.audit(include_untracked)
    code = 0 if all(entry.status in ("ok", "untracked") for entry in entries) else 1
    if as_json:
        return json.dumps([entry_json(auditor, entry) for entry in entries], indent=2), code
    return format_report(auditor, entries), code
