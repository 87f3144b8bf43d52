"""Stage `features`: the teacher's penultimate features and logits for every image of a source.

Input: `teacher/model.pt` and `data/{source}.h5`. Output: `features/{source}.h5` with
`features` float32 [N, D] (for a teacher from outside without a known penultimate layer, the
logits; provenance `config.features` says which), `logits` float32 [N, K] and, where the data has them, the
ground-truth `labels` and, for a source synthesised from the teacher, `class_targets` (the class
each image was made for). Images are streamed in chunks, so memory stays bounded by
`batch_size` whatever the source's size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dfkd.io.artifacts import H5Writer, h5_dataset, open_h5
from dfkd.errors import DfkdError
from dfkd.io.progress import Progress
from dfkd.io.provenance import make_provenance


def check_images(dataset, expected: tuple[int, int, int], path: Path) -> None:
    """The images of a data file must be uint8 [N, C, H, W] at the teacher's input spec."""
    if dataset.dtype != np.uint8 or dataset.ndim != 4 or tuple(dataset.shape[1:]) != expected:
        raise DfkdError(
            f"{path}:/images is {dataset.dtype} {tuple(dataset.shape)}; the teacher expects uint8 "
            f"[N, {expected[0]}, {expected[1]}, {expected[2]}]. Re-run `prepare` for this target."
        )


@torch.no_grad()
def extract_features(model_path: Path, data_path: Path, out: Path, batch_size: int = 2048, device: str = "auto") -> None:
    from dfkd.models import load_model
    from dfkd.device import pick_device
    from dfkd.training import normalize

    device = pick_device(device)
    model, record = load_model(model_path)
    model = model.to(device).eval()
    spec = (record["in_channels"], record["image_size"], record["image_size"])
    # a teacher from outside may give its logits (or a named layer) as features: the file says so
    kind = {"features": record["features"]} if record.get("features", "penultimate") != "penultimate" else {}
    provenance = make_provenance(
        "features", {"batch_size": batch_size, **kind}, inputs={"teacher": model_path, "data": data_path}
    )
    with open_h5(data_path) as source:
        images = h5_dataset(source, "images")
        check_images(images, spec, data_path)
        n = images.shape[0]
        labels = h5_dataset(source, "labels", ndim=1)[()] if "labels" in source else None
        made_for = h5_dataset(source, "class_targets", ndim=1)[()] if "class_targets" in source else None
        with H5Writer(out, provenance) as writer, Progress(n, f"features {Path(data_path).stem}", "images") as bar:
            features_out = logits_out = None
            for start in range(0, n, batch_size):
                chunk = torch.from_numpy(images[start : start + batch_size]).to(device)  # (B, C, H, W) uint8
                features = model.features(normalize(chunk, record["mean"], record["std"]))  # (B, D)
                logits = model.head(features)  # (B, K)
                if features_out is None:
                    features_out = writer.create("features", (n, features.shape[1]), np.float32)
                    logits_out = writer.create("logits", (n, logits.shape[1]), np.float32)
                features_out[start : start + len(chunk)] = features.float().cpu().numpy()
                logits_out[start : start + len(chunk)] = logits.float().cpu().numpy()
                bar.update(len(chunk))
            if n == 0:
                raise DfkdError(f"{data_path} holds no images; nothing to extract.")
            if labels is not None:
                writer.handle.create_dataset("labels", data=labels.astype(np.int64))
            if made_for is not None:
                writer.handle.create_dataset("class_targets", data=made_for.astype(np.int64))
