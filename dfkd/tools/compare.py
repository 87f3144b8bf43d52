"""`dfkd compare A B`: what differs between two artifacts, two runs or two results trees.

- Two artifact files: their provenance (stage, seed, command, config slice, inputs, package
  versions, content digest) key by key, and their payloads (JSON metrics; dataset shapes of
  HDF5 files; row counts of parquet tables), numbers with their difference B - A.
- Two run folders (`students/{run}/`, `teacher/`): the same for their `metrics.json`, plus the
  last epoch of their `log.csv`.
- Two results trees (`results/` or `results/{target}/`): artifacts paired by relative path;
  the metric table (`test_accuracy`, distances, ...) of every JSON artifact, the config,
  seed, command and version differences of every pair, and the files only one side has.
  Input hashes are not listed for trees (they differ downstream of any change); the
  `content` row says which artifacts hold different data.

Differences only, unless `show_equal`. Read-only; never fails on a difference (exit 0).
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Mapping

from dfkd.io.artifacts import ARTIFACT_SUFFIXES, CONTENT_KEY, read_json
from dfkd.errors import DfkdError

# Payload numbers shown in a tree's metric table (other keys: only when comparing files or runs).
HEADLINE_METRICS = ("test_accuracy", "best_epoch_accuracy", "teacher_test_accuracy", "hausdorff", "directed_ab",
                    "directed_ba", "transfer_rows")
SHORT_HASH = 12
CELL = 60  # characters of one table cell
NOT_ARTIFACTS = ("checkpoint.pt",)


# ---------------------------------------------------------------------------- flattening
def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted.key: leaf} of nested mappings; lists stay whole (shown as JSON)."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key in sorted(tree, key=str):
            out.update(flatten(tree[key], f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def provenance_facts(record: Mapping[str, Any] | None, with_inputs: bool = True) -> dict[str, Any]:
    """The provenance of one artifact as flat, comparable facts."""
    if record is None:
        return {"provenance": "none"}
    facts: dict[str, Any] = {"stage": record.get("stage"), "seed": record.get("seed"),
                             "command": record.get("command")}
    facts.update(flatten(record.get("config") or {}, "config."))
    if with_inputs:
        for role, entry in sorted((record.get("inputs") or {}).items()):
            entry = entry if isinstance(entry, Mapping) else {"path": entry}
            facts[f"inputs.{role}.path"] = entry.get("path")
            facts[f"inputs.{role}.sha256"] = str(entry.get("sha256") or "")[:SHORT_HASH]
    facts.update(flatten(record.get("versions") or {}, "versions."))
    facts["content"] = str(record.get(CONTENT_KEY) or "")[:SHORT_HASH] or None
    return facts


def payload_facts(path: Path) -> dict[str, Any]:
    """What an artifact holds, as flat facts: JSON fields; HDF5 dataset shapes; parquet rows."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            body = read_json(path, verify=False)
            return flatten({k: v for k, v in body.items() if k != "provenance"}) if isinstance(body, dict) else {}
        if suffix in (".h5", ".hdf5"):
            import h5py

            from dfkd.io.artifacts import open_h5

            shapes: dict[str, Any] = {}
            with open_h5(path) as handle:
                handle.visititems(lambda name, obj: shapes.__setitem__(f"{name}.shape", list(obj.shape))
                                  if isinstance(obj, h5py.Dataset) else None)
            return shapes
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return {"rows": pq.ParquetFile(path).metadata.num_rows}
    except DfkdError:
        raise
    except Exception as exc:  # damaged files: many types
        raise DfkdError(f"{path} cannot be read ({type(exc).__name__}: {exc}).") from exc
    return {}


def _read_provenance(path: Path) -> Mapping[str, Any] | None:
    from dfkd.tools.audit import read_provenance

    return read_provenance(path)


# ---------------------------------------------------------------------------- differences
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= CELL else text[: CELL - 3] + "..."


def _delta(a: Any, b: Any) -> str:
    x, y = _number(a), _number(b)
    if x is None or y is None or math.isnan(x) or math.isnan(y):
        return ""
    return f"{y - x:+.6g}"


def diff_rows(a: Mapping[str, Any], b: Mapping[str, Any], show_equal: bool, prefix: tuple = ()) -> list[tuple]:
    """(prefix..., key, A, B, B - A) for each key whose values differ (all keys with show_equal)."""
    rows = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if show_equal or va != vb:
            rows.append((*prefix, key, _text(va), _text(vb), _delta(va, vb)))
    return rows


def format_table(headers: tuple[str, ...], rows: list[tuple]) -> list[str]:
    """A plain fixed-width table (two spaces between columns)."""
    if not rows:
        return ["  (no differences)"]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = lambda cells: "  " + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(headers), line(tuple("-" * w for w in widths)), *map(line, rows)]


# ---------------------------------------------------------------------------- the three kinds
def compare_files(a: Path, b: Path, show_equal: bool = False) -> list[str]:
    lines = ["metrics and contents:"]
    lines += format_table(("key", "A", "B", "B - A"), diff_rows(payload_facts(a), payload_facts(b), show_equal))
    lines.append("config and provenance:")
    facts_a, facts_b = provenance_facts(_read_provenance(a)), provenance_facts(_read_provenance(b))
    lines += format_table(("key", "A", "B", "B - A"), diff_rows(facts_a, facts_b, show_equal))
    return lines


def _last_epoch(folder: Path) -> dict[str, Any]:
    import pandas as pd

    path = folder / "log.csv"
    if not path.is_file():
        return {}
    frame = pd.read_csv(path)
    return {} if frame.empty else {f"last_epoch.{k}": v for k, v in frame.iloc[-1].to_dict().items()}


def compare_runs(a: Path, b: Path, show_equal: bool = False) -> list[str]:
    lines = compare_files(a / "metrics.json", b / "metrics.json", show_equal)
    lines.append("log.csv, last epoch:")
    lines += format_table(("key", "A", "B", "B - A"), diff_rows(_last_epoch(a), _last_epoch(b), show_equal))
    return lines


def artifacts_under(root: Path) -> dict[str, Path]:
    """{relative path: path} of the artifacts in a tree (hidden files and checkpoints skipped)."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if (path.is_file() and path.suffix.lower() in ARTIFACT_SUFFIXES and path.name not in NOT_ARTIFACTS
                and not any(part.startswith(".") for part in relative.parts)):
            found[relative.as_posix()] = path
    return found


def compare_trees(a: Path, b: Path, show_equal: bool = False) -> list[str]:
    files_a, files_b = artifacts_under(a), artifacts_under(b)
    common = sorted(set(files_a) & set(files_b))
    metric_rows, config_rows = [], []
    for name in common:
        pa, pb = files_a[name], files_b[name]
        if pa.suffix.lower() == ".json":
            metrics_a, metrics_b = payload_facts(pa), payload_facts(pb)
            keep = lambda facts: {k: v for k, v in facts.items() if k in HEADLINE_METRICS}  # noqa: E731
            metric_rows += diff_rows(keep(metrics_a), keep(metrics_b), show_equal, (name,))
        facts_a = provenance_facts(_read_provenance(pa), with_inputs=False)
        facts_b = provenance_facts(_read_provenance(pb), with_inputs=False)
        config_rows += diff_rows(facts_a, facts_b, show_equal, (name,))
    lines = [f"{len(common)} artifacts in both, {len(set(files_a) - set(files_b))} only in A, "
             f"{len(set(files_b) - set(files_a))} only in B", "metrics:"]
    lines += format_table(("artifact", "metric", "A", "B", "B - A"), metric_rows)
    lines.append("config and provenance (content: the data differs):")
    lines += format_table(("artifact", "key", "A", "B", "B - A"), config_rows)
    for side, only in (("A", sorted(set(files_a) - set(files_b))), ("B", sorted(set(files_b) - set(files_a)))):
        if only:
            lines.append(f"only in {side}:")
            lines += [f"  {name}" for name in only]
    return lines


def compare_paths(a: str | Path, b: str | Path, show_equal: bool = False) -> str:
    """The report `dfkd compare A B` prints: two files, two run folders or two results trees."""
    a, b = Path(a), Path(b)
    for path in (a, b):
        if not path.exists():
            raise DfkdError(f"{path} not found.")
    if a.is_file() != b.is_file():
        raise DfkdError(f"compare two files, or two folders: {a} and {b} are one of each.")
    if a.is_file():
        for path in (a, b):
            if path.suffix.lower() not in ARTIFACT_SUFFIXES:
                raise DfkdError(f"{path} is not a dfkd artifact ({', '.join(ARTIFACT_SUFFIXES)}).")
        kind, lines = "artifacts", compare_files(a, b, show_equal)
    elif (a / "metrics.json").is_file() and (b / "metrics.json").is_file():
        kind, lines = "runs", compare_runs(a, b, show_equal)
    else:
        kind, lines = "results trees", compare_trees(a, b, show_equal)
    return "\n".join([f"compare {kind}", f"  A: {a}", f"  B: {b}", *lines])
