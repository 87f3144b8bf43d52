"""Stage `distance`: exact Hausdorff distance of a transfer set to the training set.

Inputs: `transfer/{set}.parquet` (rows from any number of sources), `features/{source}.h5`
of each source, `features/train.h5`. Output: `distance/{set}.json` with `hausdorff`,
`directed_ab` (transfer set -> train), `directed_ba` (train -> transfer set), `n_a`, `n_b`,
`dim`, and the pairs that attain each directed distance as (source, row).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from dfkd.io.artifacts import read_h5_array, read_parquet, write_json
from dfkd.errors import DfkdError
from dfkd.stages.hausdorff import gather_features, hausdorff
from dfkd.io.provenance import make_provenance


def transfer_set_distance(manifest_path: Path, feature_files: Mapping[str, Path], train_features: Path, out: Path,
                          device: str = "auto") -> dict:
    manifest = read_parquet(manifest_path, ["source", "index"])
    if manifest.empty:
        raise DfkdError(f"{manifest_path} holds no rows; an empty transfer set has no distance.")
    transfer = gather_features(manifest, feature_files)  # (n_a, D)
    train = read_h5_array(train_features, "features", ndim=2)  # (n_b, D)
    if transfer.shape[1] != train.shape[1]:
        raise DfkdError(
            f"transfer-set features are {transfer.shape[1]}-dimensional but {train_features} holds "
            f"{train.shape[1]}; all features must come from the same teacher."
        )
    from dfkd.device import pick_device

    result = hausdorff(transfer, train, device=str(pick_device(device)), desc=f"distance {Path(out).stem}")
    # Name the set's side of each winning pair by (source, row) rather than manifest position.
    row_ab, row_ba = result["pair_ab"][0], result["pair_ba"][1]
    result["pair_ab_source_row"] = [str(manifest["source"].iat[row_ab]), int(manifest["index"].iat[row_ab])]
    result["pair_ba_source_row"] = [str(manifest["source"].iat[row_ba]), int(manifest["index"].iat[row_ba])]
    inputs = {"manifest": manifest_path, "train_features": train_features}
    inputs.update({f"features/{name}": path for name, path in feature_files.items()})
    write_json(out, result, make_provenance("distance", {"metric": "euclidean"}, inputs=inputs))
    return result
