"""Stage `quality`: a transfer set's data-free scores and distances to the training data.

Inputs: the teacher's outputs on the set's rows: `labels/{source}.parquet` (`index`, `label`,
`confidence`, `margin`), optionally `features/{source}.h5` (`features` [N, D], `logits`
[N, K]) and a manifest `transfer/{set}.parquet` (`source`, `index`, ...) naming the rows;
optionally the training set's `features/train.h5` and its coverage radii. Outputs:
`quality/{set}.json` (`quality_files`), and the training set's coverage radii, once per target
(`coverage_radii_file`: each training row's exact distance to its k-th nearest other row).
The scores and distances themselves are `dfkd.stages.set_scores`'; ranking candidate sources
without training data is `dfkd score` (`dfkd.stages.score`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from dfkd.device import pick_device
from dfkd.errors import DfkdError
from dfkd.io.artifacts import h5_dataset, open_h5, read_h5_array, read_parquet, write_json
from dfkd.io.provenance import make_provenance
from dfkd.io.rows import gather_manifest
from dfkd.stages.neighbours import kth_neighbour_distances
from dfkd.stages.set_scores import (
    COVERAGE_K, DIRECTIONS, PARTIAL_QUANTILE, SetView, data_free_scores, training_distances,
)

LABEL_COLUMNS = ("index", "label", "confidence", "margin")

# Expected sign of the rank correlation with student accuracy (+1: higher is better).


# ---------------------------------------------------------------------------- the set's rows


def read_labels(path: Path, num_classes: int) -> pd.DataFrame:
    """A labels parquet, checked: not empty, classes within 0..K-1, finite confidences."""
    frame = read_parquet(path, required_columns=LABEL_COLUMNS)
    if frame.empty:
        raise DfkdError(f"{path} holds no rows; a source without images cannot be scored. Re-run `dfkd label`.")
    label = frame["label"].to_numpy()
    if not np.issubdtype(label.dtype, np.integer):
        raise DfkdError(f"{path}: column 'label' has dtype {label.dtype}; expected integers. Re-run `dfkd label`.")
    bad = label[(label < 0) | (label >= num_classes)]
    if len(bad):
        raise DfkdError(
            f"{path} holds class {int(bad[0])} ({len(bad)} rows out of range) but --num-classes is {num_classes}; "
            "pass the teacher's class count, or labels made by this target's teacher."
        )
    if not frame["index"].is_unique:
        raise DfkdError(f"{path} lists a row index more than once; re-run `dfkd label`.")
    for column in ("confidence", "margin"):
        if not np.isfinite(frame[column].to_numpy(dtype=np.float64)).all():
            raise DfkdError(f"{path}: column '{column}' holds NaN or infinite values; re-run `dfkd label`.")
    return frame


def check_features_file(path: Path, labels_path: Path, n_labels: int, num_classes: int) -> None:
    """The features file of a labels file: as many rows, K logits."""
    with open_h5(path) as handle:
        features = h5_dataset(handle, "features", ndim=2, dtypes=("f4", "f8"))
        logits = h5_dataset(handle, "logits", ndim=2, dtypes=("f4", "f8"))
        if features.shape[0] != n_labels or logits.shape[0] != n_labels:
            raise DfkdError(
                f"{path} has {features.shape[0]} rows but its labels file {labels_path} has {n_labels}; "
                "pass the features and labels files of the same sources, in the same order."
            )
        if logits.shape[1] != num_classes:
            raise DfkdError(f"{path}:/logits has {logits.shape[1]} classes but --num-classes is {num_classes}.")


def gather_view(
    manifest: pd.DataFrame,
    labels: Mapping[str, pd.DataFrame],
    features_files: Mapping[str, Path] | None = None,
) -> SetView:
    """The teacher's outputs on a manifest's rows (`source`, `index`), in manifest order.

    `labels` maps each source to its labels frame (rows found by their `index`);
    `features_files` (optional) maps each source to its features file.
    """
    from dfkd.stages.hausdorff import gather_features

    n = len(manifest)
    label, confidence, margin = np.empty(n, np.int64), np.empty(n), np.empty(n)
    logits = None
    sources = manifest["source"].to_numpy()
    index = manifest["index"].to_numpy(dtype=np.int64)
    for name in dict.fromkeys(sources.tolist()):
        if name not in labels:
            raise DfkdError(f"no labels file given for source '{name}' of the manifest (given: {sorted(labels)}).")
        rows = np.flatnonzero(sources == name)
        frame = labels[name]
        where = pd.Index(frame["index"].to_numpy()).get_indexer(index[rows])
        if (where < 0).any():
            raise DfkdError(
                f"the manifest asks for row {int(index[rows][where < 0][0])} of source '{name}', which its labels "
                "file lacks; the manifest and the labels do not match. Re-run the stale rule."
            )
        label[rows] = frame["label"].to_numpy()[where]
        confidence[rows] = frame["confidence"].to_numpy(dtype=np.float64)[where]
        margin[rows] = frame["margin"].to_numpy(dtype=np.float64)[where]
    if features_files is not None:
        logits = gather_manifest(manifest, features_files, "logits", ndim=2).astype(np.float64)  # (M, K)
    features = gather_features(manifest, features_files) if features_files is not None else None
    return SetView(label, confidence, margin, logits, features)


# ---------------------------------------------------------------------------- coverage radii, once per target
def coverage_radii_file(train_features: Path, out: Path, k: int = COVERAGE_K, device: str = "auto") -> np.ndarray:
    """Write `radii` (N_train,) float64, each training row's distance to its k-th nearest other
    training row (`kth_neighbour_distances`), to the HDF5 file `out`; return them.

    Coverage needs them for every transfer set but they depend on the training features
    alone: one job per target computes them (an O(N^2 D) search) instead of one per set.
    """
    from dfkd.io.artifacts import write_h5
    train = read_h5_array(train_features, "features", ndim=2)  # (N_train, D)
    radii = kth_neighbour_distances(train, k, device=str(pick_device(device)))
    write_h5(out, {"radii": radii}, make_provenance("coverage_radii", {"coverage_k": k},
                                                    inputs={"train_features": Path(train_features)}),
             attrs={"coverage_k": k})
    return radii


def read_coverage_radii(path: Path, train_features: Path, k: int) -> np.ndarray:
    """The radii of `coverage_radii_file`, refused unless made with this k from these very features."""
    from dfkd.io.artifacts import read_h5_provenance
    from dfkd.io.provenance import file_sha256

    radii = read_h5_array(path, "radii", ndim=1, dtypes=("f8",))
    provenance = read_h5_provenance(path) or {}
    made_from = provenance.get("inputs", {}).get("train_features", {}).get("sha256")
    made_with = provenance.get("config", {}).get("coverage_k")
    if made_with != k:
        raise DfkdError(f"{path} holds radii for k={made_with}; coverage needs k={k}. Re-run coverage_radii.")
    if made_from != file_sha256(train_features):
        raise DfkdError(f"{path} was computed from other training features than {train_features}; "
                        "re-run coverage_radii.")
    return radii


# ---------------------------------------------------------------------------- files
def named_files(files) -> dict[str, Path]:
    """Files by source name: a mapping as given, or a list named by file stem."""
    from dfkd.io.artifacts import files_by_source

    if isinstance(files, Mapping):
        return {str(name): Path(path) for name, path in files.items()}
    return files_by_source(files)


def present_directions(*parts: Mapping[str, float]) -> dict[str, int]:
    return {name: DIRECTIONS[name] for part in parts for name in part if name in DIRECTIONS}


def quality_of_set(
    manifest: Path,
    labels_files,
    features_files,
    num_classes: int,
    per_class: int,
    train_features: Path | None = None,
    train_radii: Path | None = None,
    device: str = "auto",
) -> dict:
    """The quality payload of one transfer set (`quality/{set}.json` without provenance).

    `labels_files` / `features_files`: lists of `labels/{source}.parquet` /
    `features/{source}.h5` (file stem = source) or mappings source -> path; they must cover
    the manifest's sources. With `train_features`, the distances to the training set too;
    `train_radii` (`coverage_radii_file` of those features) saves recomputing coverage's radii.
    """
    manifest_path = Path(manifest)
    frame = read_parquet(manifest_path, required_columns=["source", "index", "label"])
    if frame.empty:
        raise DfkdError(f"{manifest_path} holds no rows; an empty transfer set cannot be scored.")
    labels = {name: read_labels(path, num_classes) for name, path in named_files(labels_files).items()}
    features = named_files(features_files) if features_files is not None else None
    view = gather_view(frame, labels, features)
    scores = data_free_scores(view, num_classes, per_class)
    payload = {
        # transfer/{set}/seed{k}.parquet (dfkd.io.layout), or a flat {set}.parquet given by hand
        "set": manifest_path.parent.name if manifest_path.stem.startswith("seed") else manifest_path.stem.split(".")[0],
        "n": int(len(frame)),
        "num_classes": int(num_classes),
        "per_class": int(per_class),
        "sources": list(dict.fromkeys(frame["source"].astype(str).tolist())),
        "class_counts": np.bincount(view.label, minlength=num_classes).tolist(),
        "scores": scores,
    }
    if train_features is not None:
        if view.features is None:
            raise DfkdError("distances to the training set need the set's features files; pass --features.")
        train = read_h5_array(train_features, "features", ndim=2)  # (N_train, D)
        radius = None if train_radii is None else read_coverage_radii(train_radii, train_features, COVERAGE_K)
        payload["distances"], payload["distance_details"] = training_distances(
            view.features, train, device=str(pick_device(device)), radius=radius
        )
    payload["directions"] = present_directions(scores, payload.get("distances", {}))
    return payload


def quality_files(
    manifest: Path,
    labels_files,
    features_files,
    num_classes: int,
    per_class: int,
    out: Path,
    train_features: Path | None = None,
    train_radii: Path | None = None,
    device: str = "auto",
) -> dict:
    """`quality_of_set`, written to `out` (JSON with provenance); returns the payload."""
    if train_radii is not None and train_features is None:
        raise DfkdError("--train-radii needs --train-features (the radii are those features' own).")
    payload = quality_of_set(manifest, labels_files, features_files, num_classes, per_class, train_features,
                             train_radii, device)
    inputs = {"manifest": Path(manifest)}
    inputs.update({f"labels/{name}": path for name, path in named_files(labels_files).items()})
    if features_files is not None:
        inputs.update({f"features/{name}": path for name, path in named_files(features_files).items()})
    if train_features is not None:
        inputs["train_features"] = Path(train_features)
    if train_radii is not None:
        inputs["train_radii"] = Path(train_radii)
    config = {"num_classes": num_classes, "per_class": per_class, "coverage_k": COVERAGE_K,
              "partial_quantile": PARTIAL_QUANTILE}
    write_json(out, payload, make_provenance("quality", config, inputs=inputs))
    return payload


