"""Stage `assemble`: the transfer set of a recipe (the study's Algorithm 1, as we implement it).

Inputs: `labels/{source}.parquet` of the recipe's sources, in order; the first is the base.
Outputs: `transfer/{set}.parquet` (`source`, `index`, `label`, `confidence`) and
`transfer/{set}.counts.csv` (per-class counts before and after, per source, and `short`).

Unbalanced: rows of the base alone, at most `total` of them (a seeded random subset where
the base has more).
Balanced: each kept class c gets a target (`per_class`, or its share of `size`); take up to
the target from the rows the teacher labels c in the base, then top the class up from the
next source, and so on. Within a source, rows are picked at random (seeded), or in the order
`prefer` names (ties in random order): `confident` (highest teacher confidence first, also
`prefer_confident`), `margin_low` (smallest top-1 minus top-2 probability first: the most
ambiguous rows, near the teacher's decision boundaries), `margin_high` (largest first). A class
no source can fill stays short: the counts report it, nothing hides it.

Caps, in order of precedence:
- `size`, when given, fixes the total: `size // k` rows per kept class, the remainder one
  each to the lowest classes. It replaces `total` and `per_class` (both modes).
- otherwise `total` caps the set (default: the base's row count; the CLI and Snakemake
  always pass the training-set size) and `per_class` caps each class (default
  `total // k`; never more than `total // k`, so the set never exceeds `total`).
- `classes=k` keeps classes 0..k-1 only (default all K).

Manifest order (deterministic): by class, then by source order, then by row index.
Randomness: one `numpy.random.default_rng(seed)`; each source, in recipe order, draws one
random permutation of its rows (its pick order) whether or not any of its rows is needed,
so the same labels and seed give the same manifest byte for byte.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dfkd.io.artifacts import atomic_path, files_by_source, read_parquet, write_parquet
from dfkd.errors import DfkdError
from dfkd.io.progress import note
from dfkd.io.provenance import make_provenance

LABEL_COLUMNS = ("index", "label", "confidence")
PREFER = ("random", "confident", "margin_low", "margin_high")  # pick order within a class and source
MANIFEST_COLUMNS = ("source", "index", "label", "confidence")


# ---------------------------------------------------------------------------- inputs
def _check_cap(name: str, value: int | None, minimum: int = 0) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DfkdError(f"assemble: {name} must be an integer, got {value!r}.")
    if value < minimum:
        raise DfkdError(f"assemble: {name} must be >= {minimum}, got {value}. Fix the transfer set's config.")


def _source_arrays(name: str, frame: pd.DataFrame, num_classes: int) -> dict[str, np.ndarray]:
    """Validated (index, label, confidence) arrays of one source's labels frame."""
    missing = [column for column in LABEL_COLUMNS if column not in frame.columns]
    if missing:
        raise DfkdError(f"labels of source '{name}' lack columns {missing} (it has {list(frame.columns)}).")
    arrays = {}
    for column in ("index", "label"):
        values = frame[column].to_numpy()
        if len(values) and not np.issubdtype(values.dtype, np.integer):
            raise DfkdError(
                f"labels of source '{name}': column '{column}' has dtype {values.dtype}; expected integers. "
                "Re-run `dfkd label` for this source."
            )
        arrays[column] = values.astype(np.int64, copy=False)
    labels, index = arrays["label"], arrays["index"]
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DfkdError(
            f"labels of source '{name}' hold class {int(bad[0])} ({len(bad)} rows out of range), but the "
            f"target has num_classes={num_classes} (classes 0..{num_classes - 1}). Were the labels made by "
            "another target's teacher? Re-run `dfkd label` with this target's teacher."
        )
    if len(index) and index.min() < 0:
        raise DfkdError(f"labels of source '{name}' hold a negative row index {int(index.min())}.")
    sorted_index = np.sort(index)
    repeated = sorted_index[1:][sorted_index[1:] == sorted_index[:-1]]
    if len(repeated):
        raise DfkdError(
            f"labels of source '{name}' list row index {int(repeated[0])} more than once "
            f"({len(repeated)} repeats); each data row must be labelled once. Re-run `dfkd label`."
        )
    arrays["confidence"] = frame["confidence"].to_numpy(dtype=np.float32)
    if not np.isfinite(arrays["confidence"]).all():
        raise DfkdError(f"labels of source '{name}' hold NaN or infinite confidences. Re-run `dfkd label`.")
    return arrays


def _targets(
    num_classes: int, kept: int, n_base: int, per_class: int | None, total: int | None, size: int | None
) -> np.ndarray:
    """Per-class targets [K] of a balanced set; 0 for the classes that are not kept."""
    targets = np.zeros(num_classes, dtype=np.int64)
    if size is not None:
        share, extra = divmod(size, kept)
        targets[:kept] = share
        targets[:extra] += 1
        return targets
    total = n_base if total is None else total
    cap = total // kept if per_class is None else min(per_class, total // kept)
    targets[:kept] = cap
    return targets


# ---------------------------------------------------------------------------- picking
def _resolve_prefer(prefer: str, prefer_confident: bool) -> str:
    if prefer not in PREFER:
        raise DfkdError(f"assemble: prefer is {prefer!r}; use one of {', '.join(PREFER)}.")
    if prefer_confident and prefer not in ("random", "confident"):
        raise DfkdError(f"assemble: prefer_confident contradicts prefer={prefer!r}; give one of them.")
    return "confident" if prefer_confident else prefer


def _preference_key(name: str, frame: pd.DataFrame, confidence: np.ndarray, prefer: str) -> np.ndarray | None:
    """Each row's sort key (smallest picked first) under `prefer`; None for random order."""
    if prefer == "random":
        return None
    if prefer == "confident":
        return -confidence
    if "margin" not in frame.columns:
        raise DfkdError(f"labels of source '{name}' lack the 'margin' column that prefer={prefer!r} needs "
                        f"(it has {list(frame.columns)}). Re-run `dfkd label` for this source.")
    margin = frame["margin"].to_numpy(dtype=np.float32)
    if not np.isfinite(margin).all():
        raise DfkdError(f"labels of source '{name}' hold NaN or infinite margins. Re-run `dfkd label`.")
    return margin if prefer == "margin_low" else -margin


def _preference_order(labels: np.ndarray, key: np.ndarray | None, perm: np.ndarray) -> np.ndarray:
    """Row positions, grouped by class (ascending); within a class in pick order.

    Pick order is the random permutation `perm`, or, with a `key`, the smallest key first
    with ties in `perm` order. Stable sorts keep it exact and vectorised.
    """
    order = perm
    if key is not None:
        order = order[np.argsort(key[order], kind="stable")]
    small = labels.astype(np.int16 if labels.size == 0 or labels.max() < 2**15 else np.int32)  # radix sort
    return order[np.argsort(small[order], kind="stable")]


def _pick(labels: np.ndarray, key: np.ndarray | None, perm: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Row positions of up to need[c] rows of each class c, in pick order."""
    order = _preference_order(labels, key, perm)
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, np.arange(len(need)))  # first position of each class
    rank = np.arange(len(order)) - starts[sorted_labels]  # rank of each row within its class
    return order[rank < need[sorted_labels]]


def _pick_unbalanced(labels: np.ndarray, key: np.ndarray | None, perm: np.ndarray, kept: int, cap: int) -> np.ndarray:
    """Row positions of up to `cap` rows of a kept class, in pick order."""
    order = perm[labels[perm] < kept]
    if key is not None:
        order = order[np.argsort(key[order], kind="stable")]
    return order[:cap]


# ---------------------------------------------------------------------------- the algorithm
def assemble(
    labels: Sequence[tuple[str, pd.DataFrame]],
    num_classes: int,
    *,
    balanced: bool = True,
    per_class: int | None = None,
    total: int | None = None,
    classes: int | None = None,
    size: int | None = None,
    seed: int = 0,
    prefer_confident: bool = False,
    prefer: str = "random",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assemble a transfer set from teacher-labelled sources (the first is the base).

    Returns `(manifest, counts)`: the manifest has one row per picked image (`source`,
    `index`, `label`, `confidence`), sorted by class, then source order, then index, and
    never holds a (source, index) pair twice. `counts` has one row per class (all K):
    `class`, `before` (the base's teacher count over all its rows), `target` (the class's
    cap in a balanced set, 0 for classes not kept, -1 in an unbalanced set: no per-class
    target), `after`, one `from_{source}` column per source, and `short` (after < target).
    See the module docstring for the caps and their defaults, and for `prefer` (random,
    confident, margin_low, margin_high; `prefer_confident=True` is `prefer="confident"`).
    """
    _check_cap("num_classes", num_classes, minimum=1)
    for name, value in (("per_class", per_class), ("total", total), ("size", size)):
        _check_cap(name, value)
    _check_cap("classes", classes, minimum=1)
    _check_cap("seed", seed)
    if classes is not None and classes > num_classes:
        raise DfkdError(f"assemble: classes={classes} exceeds the target's num_classes={num_classes}.")
    if not labels:
        raise DfkdError("assemble: a transfer set needs at least one source.")
    names = [name for name, _ in labels]
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise DfkdError(f"assemble: source names must be distinct non-empty strings, got {names}.")
    sources = [_source_arrays(name, frame, num_classes) for name, frame in labels]
    prefer = _resolve_prefer(prefer, prefer_confident)
    keys = [_preference_key(name, frame, source["confidence"], prefer)
            for (name, frame), source in zip(labels, sources)]
    kept = num_classes if classes is None else classes

    # 1. Draw every source's random pick order, in recipe order, whatever is needed from it.
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(len(source["label"])) for source in sources]

    # 2. Pick rows: the base alone (unbalanced), or class by class through the sources.
    picked: list[np.ndarray] = []
    if balanced:
        targets = _targets(num_classes, kept, len(sources[0]["label"]), per_class, total, size)
        need = targets.copy()
        for source, perm, key in zip(sources, perms, keys):
            rows = _pick(source["label"], key, perm, need)
            need -= np.bincount(source["label"][rows], minlength=num_classes)
            picked.append(rows)
    else:
        cap = size if size is not None else (len(sources[0]["label"]) if total is None else total)
        base = sources[0]
        picked.append(_pick_unbalanced(base["label"], keys[0], perms[0], kept, cap))
        picked.extend(np.zeros(0, dtype=np.int64) for _ in sources[1:])
        targets = np.full(num_classes, -1, dtype=np.int64)

    # 3. The manifest, in its fixed order: class, source order, index.
    position = np.concatenate([np.full(len(rows), j, dtype=np.int64) for j, rows in enumerate(picked)])
    index = np.concatenate([source["index"][rows] for source, rows in zip(sources, picked)])
    label = np.concatenate([source["label"][rows] for source, rows in zip(sources, picked)])
    confidence = np.concatenate([source["confidence"][rows] for source, rows in zip(sources, picked)])
    order = np.lexsort((index, position, label))
    manifest = pd.DataFrame(
        {
            "source": np.asarray(names, dtype=object)[position[order]],
            "index": index[order],
            "label": label[order],
            "confidence": confidence[order],
        }
    )

    # 4. Per-class counts: before (base, all rows), target, after, per source, short.
    after = np.bincount(label, minlength=num_classes)
    counts = pd.DataFrame(
        {
            "class": np.arange(num_classes, dtype=np.int64),
            "before": np.bincount(sources[0]["label"], minlength=num_classes),
            "target": targets,
            "after": after,
        }
    )
    for name, source, rows in zip(names, sources, picked):
        counts[f"from_{name}"] = np.bincount(source["label"][rows], minlength=num_classes)
    counts["short"] = after < targets
    return manifest, counts


def shortfall_warning(manifest: pd.DataFrame, counts: pd.DataFrame, size: int | None) -> str | None:
    """What the set lacks against what was asked (`size`, per-class targets), or None."""
    parts = []
    if size is not None and len(manifest) < size:
        parts.append(f"{len(manifest)} rows, short of size={size}")
    short = counts[counts["short"]]
    if len(short):
        listed = ", ".join(f"{c} ({a}/{t})" for c, a, t in short[["class", "after", "target"]].head(10).itertuples(index=False))
        parts.append(f"{len(short)} class(es) short of their target (class (rows/target)): {listed}"
                     + (" ..." if len(short) > 10 else ""))
    if not parts:
        return None
    return ("; ".join(parts) + ". The sources hold too few rows the teacher assigns to these classes: add a "
            "balancing source or a larger one, or lower size / per_class.")


def _check_index_range(path: Path, frame: pd.DataFrame) -> None:
    """Labels must index rows of their source's data file (found through their provenance)."""
    from dfkd.io.artifacts import read_parquet_provenance
    from dfkd.stages.labels import recorded_data_rows

    if len(frame) == 0:
        return
    features = (((read_parquet_provenance(path) or {}).get("inputs") or {}).get("features") or {}).get("path")
    data = recorded_data_rows(Path(features)) if features and Path(features).is_file() else None
    top = int(frame["index"].max())
    if data is not None and top >= data[1]:
        raise DfkdError(
            f"labels {path} list row index {top}, but its data file {data[0]} has {data[1]} rows "
            f"(0..{data[1] - 1}): the labels are stale or belong to another source. Re-run `dfkd features` "
            f"and `dfkd label` on {data[0]}."
        )


def assemble_files(
    label_paths: Sequence[Path],
    num_classes: int,
    out: Path,
    counts_out: Path | None = None,
    **options: Any,
) -> None:
    """Read labels parquets (source name = file stem), assemble, write the manifest and counts.

    `options` are `assemble`'s keyword arguments; they go into the manifest's provenance.
    """
    for name in ("per_class", "total", "size"):  # `assemble` allows 0 (an empty set); a stage never wants one
        if options.get(name) == 0:
            raise DfkdError(f"assemble: {name}=0 asks for an empty transfer set; give {name} >= 1 or leave it out.")
    named = files_by_source(label_paths)
    labels = [(stem, read_parquet(path, required_columns=LABEL_COLUMNS)) for stem, path in named.items()]
    for (stem, frame), path in zip(labels, named.values()):
        _check_index_range(path, frame)
    manifest, counts = assemble(labels, num_classes, **options)
    if len(manifest) == 0:
        rows = sum(len(frame) for _, frame in labels)
        raise DfkdError(
            f"assemble: the transfer set {out} would have 0 rows: its sources {list(named)} hold {rows} rows, none of "
            f"them labelled by the teacher in the kept classes (see the counts). Add or change a source."
        )
    config = {"num_classes": num_classes, "sources": list(named), **options}
    provenance = make_provenance(
        "assemble", config, inputs={f"labels/{stem}": path for stem, path in named.items()},
        seed=options.get("seed", 0),
    )
    warning = shortfall_warning(manifest, counts, options.get("size"))
    if warning is not None:  # said on stderr (the job's log) and kept in the manifest's provenance
        print(f"assemble: warning: {Path(out).name}: {warning}", file=sys.stderr, flush=True)
        provenance["warnings"] = [warning]
    write_parquet(out, manifest, provenance)
    if counts_out is not None:
        with atomic_path(counts_out) as tmp:
            counts.to_csv(tmp, index=False)
    by_source = manifest["source"].value_counts(sort=False)
    note(f"assembled {Path(out).stem}: {len(manifest):,} rows ("
         + ", ".join(f"{name} {int(by_source.get(name, 0)):,}" for name in named) + ")")
