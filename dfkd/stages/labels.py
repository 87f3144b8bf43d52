"""Stage `label`: the teacher's class for every image of a source.

Input: `features/{source}.h5` (its `logits`). Output: `labels/{source}.parquet` with
`index` (row in the source's data file), `label` (teacher's class), `confidence` (max
softmax), `margin` (top-1 minus top-2 probability) and `true_label` (-1 where unknown); for a source
synthesised from the teacher also `made_for` (the class each image was made for), and the log
says how often the teacher's label equals it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dfkd.io.artifacts import h5_dataset, open_h5, read_h5_provenance, write_parquet
from dfkd.errors import DfkdError
from dfkd.io.progress import Progress
from dfkd.io.provenance import make_provenance

CHUNK = 1 << 16


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    expd = np.exp(shifted, dtype=np.float64)
    return expd / expd.sum(axis=1, keepdims=True)


def teacher_labels(logits: np.ndarray) -> pd.DataFrame:
    """Class, confidence and margin of each row of `logits` [N, K]."""
    probs = softmax(logits)  # (N, K)
    top2 = np.sort(probs, axis=1)[:, -2:]  # (N, 2); K >= 2 by the schema
    return pd.DataFrame(
        {
            "label": probs.argmax(axis=1).astype(np.int64),
            "confidence": top2[:, 1].astype(np.float32),
            "margin": (top2[:, 1] - top2[:, 0]).astype(np.float32),
        }
    )


def made_for_line(frame: pd.DataFrame) -> str:
    """How often the teacher's label equals the class a synthesised image was made for."""
    agree = frame["label"].to_numpy() == frame["made_for"].to_numpy()
    return f"teacher label = class made for in {agree.mean():.1%} of {len(agree):,} rows"


def recorded_data_rows(features_path: Path) -> tuple[Path, int] | None:
    """(data file named by the features file's provenance, its image count); None where unknown."""
    record = ((read_h5_provenance(features_path) or {}).get("inputs") or {}).get("data") or {}
    data = Path(record["path"]) if record.get("path") else None
    if data is None or not data.is_file():
        return None  # written elsewhere (paths are relative to the workflow's folder), or deleted
    with open_h5(data) as handle:
        return (data, int(handle["images"].shape[0])) if "images" in handle else None


def label_source(features_path: Path, out: Path) -> pd.DataFrame:
    with open_h5(features_path) as handle:
        logits = h5_dataset(handle, "logits", ndim=2, dtypes=("f4", "f8"))
        n = logits.shape[0]
        if n == 0:
            raise DfkdError(f"{features_path}:/logits is empty; the source has no images.")
        data = recorded_data_rows(features_path)
        if data is not None and data[1] != n:  # labels index the data file's rows: they must be its rows
            raise DfkdError(
                f"{features_path} has {n} rows but its data file {data[0]} has {data[1]}: the features are "
                f"stale. Re-run `dfkd features` on {data[0]}, then label again."
            )
        parts = []
        with Progress(n, f"label {Path(features_path).stem}", "rows") as bar:
            for start in range(0, n, CHUNK):
                parts.append(teacher_labels(logits[start : start + CHUNK]))
                bar.update(len(parts[-1]))
        truth = h5_dataset(handle, "labels", ndim=1)[()] if "labels" in handle else np.full(n, -1)
        made_for = h5_dataset(handle, "class_targets", ndim=1)[()] if "class_targets" in handle else None
    frame = pd.concat(parts, ignore_index=True)
    if not np.isfinite(frame["confidence"]).all():
        raise DfkdError(f"{features_path}:/logits holds NaN or inf values; the teacher is broken. Re-train it.")
    frame.insert(0, "index", np.arange(n, dtype=np.int64))
    frame["true_label"] = truth.astype(np.int64)
    if made_for is not None:
        frame["made_for"] = made_for.astype(np.int64)
        print(f"label {Path(features_path).stem}: {made_for_line(frame)}", file=sys.stderr, flush=True)
    write_parquet(out, frame, make_provenance("label", {}, inputs={"features": features_path}))
    return frame
