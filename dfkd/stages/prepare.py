"""Stage `prepare`: load one source and store it at a target's spec.

Input: a source block (raw files on disk, or a seed for generators). Output:
`results/{target}/data/{name}.h5` with `images` uint8 (N, C, H, W), `labels` int64 (N,) where
the source has ground truth, attrs `source`, `kind`, `class_names` (JSON), `skipped`, and the
provenance (stage, config slice, hashes of the raw files read, seed).

Raw files are hashed into the provenance when there are at most `MAX_HASHED_INPUTS` of them;
a larger tree (an image folder) is recorded by a sha256 of its sorted (relative path, size,
mtime_ns) listing instead, in the attr `raw_listing_sha256` and the provenance's `raw_listing`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from dfkd.io.artifacts import write_h5
from dfkd.errors import DfkdError
from dfkd.io.progress import note
from dfkd.io.provenance import make_provenance
from dfkd.sources import SourceData, TargetSpec, validate_source_config
from dfkd.sources.imagefolder import listing_digest

log = logging.getLogger(__name__)

MAX_HASHED_INPUTS = 64


def check_source_data(data: SourceData, spec: TargetSpec, name: str) -> None:
    """Raise DfkdError unless images are uint8 (N, C, S, S) at the spec with matching labels."""
    expected = (spec.channels, spec.image_size, spec.image_size)
    images = data.images
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[1:] != expected
    ):
        raise DfkdError(
            f"Source '{name}' gave images {getattr(images, 'dtype', type(images))} "
            f"{getattr(images, 'shape', '')}; expected uint8 (N, {', '.join(map(str, expected))})."
        )
    if len(images) == 0:
        raise DfkdError(f"Source '{name}' gave no images; check its block (count, root).")
    if data.labels is not None:
        labels = data.labels
        if labels.dtype != np.int64 or labels.shape != (len(images),):
            raise DfkdError(
                f"Source '{name}' gave labels {labels.dtype} {labels.shape}; expected int64 ({len(images)},)."
            )
        if labels.min() < 0:
            raise DfkdError(f"Source '{name}' has a negative label ({labels.min()}).")


def raw_inputs(files: list[Path]) -> tuple[dict[str, Path], dict | None]:
    """Provenance inputs for the raw files, or a listing digest when there are too many."""
    if len(files) <= MAX_HASHED_INPUTS:
        return {f"raw/{i}": path for i, path in enumerate(files)}, None
    root = Path(_common_root(files))
    return {}, {"root": str(root), "files": len(files), "sha256": listing_digest(root, files)}


def _common_root(files: list[Path]) -> str:
    common = os.path.commonpath([str(f) for f in files])
    return common if Path(common).is_dir() else str(Path(common).parent)


def prepare_source(
    name: str, cfg: dict, spec: TargetSpec, split: str | None, out: Path, config_slice: dict
) -> None:
    """Load source `name` (block `cfg`) at `spec` and write it to `out` (HDF5, atomically).

    `split`: None for a transfer source; "train"/"test" for a target's own data (wins over
    the block's `split`). `config_slice` is recorded verbatim in the provenance.
    """
    # 1. Validate the block and find the raw files it reads.
    started = time.perf_counter()
    try:
        kind, args = validate_source_config(cfg)
        files = list(kind.input_files(args, split))
        # 2. Load and convert (errors name the file and the fix).
        note(f"prepare {name}: loading the {kind.name} source{f' ({len(files):,} raw files)' if files else ''} "
             f"at {spec.channels}x{spec.image_size}x{spec.image_size}")
        data = kind.load(args, spec, split)
    except DfkdError as exc:
        raise DfkdError(f"Source '{name}': {exc}") from exc
    check_source_data(data, spec, name)
    if not files:  # a dataset fetched by `download: true` appears only now
        files = list(kind.input_files(args, split))
    # 3. Provenance: hashes of small inputs, a listing digest of large trees.
    inputs, listing = raw_inputs(files)
    provenance = make_provenance("prepare", config_slice, inputs=inputs, seed=args.get("seed"))
    attrs = {"source": name, "kind": kind.name, "skipped": int(data.skipped)}
    if listing is not None:
        provenance["raw_listing"] = listing
        attrs["raw_listing_sha256"] = listing["sha256"]
    if data.class_names is not None:
        attrs["class_names"] = json.dumps(list(data.class_names))
    arrays = {"images": data.images}
    if data.labels is not None:
        arrays["labels"] = data.labels
    # 4. Write atomically: a failure leaves no file at `out`.
    write_h5(out, arrays, provenance, attrs)
    note(f"prepared {name}: {len(data.images):,} images {data.images.shape[1:]}"
         f"{' with labels' if data.labels is not None else ''}{f', {data.skipped} skipped' if data.skipped else ''}"
         f" -> {out} in {time.perf_counter() - started:.1f}s")
