"""Teacher training: data/train.h5 + data/test.h5 -> teacher/{model.pt, metrics.json, log.csv}.

`import_teacher` instead takes a pretrained teacher from a file (config `teacher.load`) and
writes teacher/{model.pt, metrics.json} (dfkd.models.external).

Cross-entropy on the target's labelled training data, with the `teacher` block of the target
config (arch, epochs, batch_size, optimizer, schedule, augment, seed, amp). Resumable from
teacher/checkpoint.pt (see dfkd.training.fit).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from torch.nn import functional as F

from dfkd.io.artifacts import save_torch, write_json
from dfkd.device import describe_device, pick_device
from dfkd.models import count_parameters, model_record
from dfkd.io.provenance import make_provenance, provenance_json
from dfkd.schema import load_schema
from dfkd.training import (
    TensorLoader, evaluate, fit, init_model, load_split, prepare_batch,
    target_spec, training_config, write_log_csv,
)

# the schema's default of targets.X.teacher.min_accuracy (the one place it is written)
DEFAULT_MIN_ACCURACY = load_schema()["$defs"]["target"]["properties"]["teacher"]["properties"]["min_accuracy"]["default"]


def teacher_warning(metrics: Mapping[str, Any], min_accuracy: float = DEFAULT_MIN_ACCURACY) -> str | None:
    """A one-line warning when the teacher's test accuracy is below `min_accuracy`, else None.

    A teacher near chance (1/K) labels every transfer set at random, so every student and
    every table built on it is meaningless, though the workflow runs to the end.
    """
    accuracy = float(metrics["test_accuracy"])
    if accuracy >= min_accuracy:
        return None
    classes = len(metrics.get("per_class_accuracy") or []) or None
    chance = f" (chance: {100 / classes:.1f}% for {classes} classes)" if classes else ""
    return (
        f"teacher test accuracy {100 * accuracy:.1f}% is below min_accuracy {100 * min_accuracy:.0f}%{chance}: "
        "its labels, students and tables mean little. Train it longer (teacher.epochs) or check its data "
        "and learning rate; set teacher.min_accuracy to change this threshold."
    )


def train_teacher(
    train_h5: Path,
    test_h5: Path,
    target: Mapping[str, Any],
    out_dir: Path,
    *,
    on_step: Callable[[int, int], None] | None = None,
    fresh_on_mismatch: bool = False,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
    device: str = "auto",
) -> dict[str, Any]:
    """Train the target's teacher; write model.pt, metrics.json, log.csv in `out_dir`; return the metrics.

    Resumes from out_dir/checkpoint.pt. `on_step(epoch, step)` runs after every step;
    `fresh_on_mismatch` overwrites a checkpoint of other settings instead of refusing it.
    Below `min_accuracy` the teacher is kept, but warned about on stderr and in metrics.json
    (`warning`); the threshold is not part of its settings.
    """
    # 1. config, provenance, data on the device
    out_dir = Path(out_dir)
    cfg, spec, device = training_config(target["teacher"], "teacher"), target_spec(target), pick_device(device)
    provenance = make_provenance("teacher", {"target": spec, "teacher": cfg},
                                 {"train": train_h5, "test": test_h5}, cfg["seed"])
    identity = {"stage": "teacher", "arch": cfg["arch"], "config": provenance["config"],
                "inputs": {role: record["sha256"] for role, record in provenance["inputs"].items()}}
    train_x, train_y = load_split(train_h5, spec, device)  # (N, C, H, W) uint8, (N,) int64
    test_x, test_y = load_split(test_h5, spec, device)
    mean, std, K = spec["mean"], spec["std"], spec["num_classes"]

    # 2. model, loader, loss
    model = init_model(cfg["arch"], spec["channels"], K, spec["image_size"], cfg["seed"], device)
    loader = TensorLoader([train_x, train_y], cfg["batch_size"], cfg["seed"])

    def step_loss(batch, generator):
        images, labels = batch  # (B, C, H, W) uint8, (B,)
        x = prepare_batch(images, mean, std, cfg["augment"], generator)  # (B, C, H, W) float
        return F.cross_entropy(model(x), labels)

    # 3. train (resumes from out_dir/checkpoint.pt)
    result = fit(model, loader, step_loss, lambda: evaluate(model, test_x, test_y, mean, std, K, cfg["amp"]),
                 cfg, identity, out_dir, name="teacher", on_step=on_step,
                 fresh_on_mismatch=fresh_on_mismatch,
                 nan_hint=f"Lower teacher.optimizer.lr (now {cfg['optimizer']['lr']}) or use schedule 'onecycle'.")

    # 4. outputs: model, log, metrics (metrics last)
    save_torch(out_dir / "model.pt", model_record(model, cfg["arch"], spec["channels"], K, spec["image_size"],
                                                  mean, std, provenance))
    write_log_csv(out_dir / "log.csv", result.log)
    metrics = {
        "test_accuracy": result.last_eval["accuracy"],
        "per_class_accuracy": result.last_eval["per_class"],
        "arch": cfg["arch"],
        "parameters": count_parameters(model),
        "epochs": cfg["epochs"],
        "train_rows": len(train_x),
        "seconds": result.wall_seconds,
        "train_seconds": result.train_seconds,
        "images_per_second": result.images_per_second,
        "device": describe_device(device),
    }
    warning = teacher_warning(metrics, min_accuracy)
    if warning is not None:
        metrics["warning"] = warning
        print(f"\n{'!' * 80}\nWARNING: {warning}\n{'!' * 80}", file=sys.stderr, flush=True)
    write_json(out_dir / "metrics.json", metrics, provenance)
    return metrics


# ---------------------------------------------------------------------------- teachers from outside
def import_teacher(
    teacher_file: Path,
    params: Mapping[str, Any],
    out_dir: Path,
    test_h5: Path | None = None,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
    device: str = "auto",
) -> dict[str, Any]:
    """A pretrained teacher (params `load`, see dfkd.models.external) -> out_dir/model.pt, metrics.json.

    The model is checked on one zero batch of the target's shape; with `test_h5` its test
    accuracy is measured (and warned about below `min_accuracy`), else `test_accuracy` is None.
    Provenance records the teacher file's sha256 (input `teacher_file`).
    """
    from dfkd.models import build_model
    from dfkd.models.external import check_against_target, model_from_record, record_fields

    out_dir, teacher_file = Path(out_dir), Path(teacher_file)
    load, spec = params["load"], target_spec(params)
    inputs = {"teacher_file": teacher_file, **({"test": test_h5} if test_h5 is not None else {})}
    provenance = make_provenance("teacher", {"target": spec, "load": load}, inputs)
    fields = record_fields(load, teacher_file)
    K, mean, std = spec["num_classes"], spec["mean"], spec["std"]
    record = {"in_channels": int(spec["channels"]), "num_classes": int(K), "image_size": int(spec["image_size"]),
              "mean": [float(m) for m in mean], "std": [float(s) for s in std], **fields}
    if "format" in record:
        model = model_from_record(record, str(teacher_file))
    else:  # a registry architecture's weights: the ordinary dfkd model file
        from dfkd.models.external import _fit_weights

        model = _fit_weights(build_model(record["arch"], spec["channels"], K, spec["image_size"]),
                             record["state_dict"], teacher_file,
                             f"arch '{record['arch']}' at the target's {spec['channels']}x{spec['image_size']}x"
                             f"{spec['image_size']} images and {K} classes")
        record["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    model.eval()
    feature_dim = check_against_target(model, spec, str(teacher_file), params.get("target", "X"))
    metrics: dict[str, Any] = {
        "test_accuracy": None,
        "arch": record["arch"],
        "format": load["format"],
        "features": record.get("features", "penultimate"),
        "feature_dim": feature_dim,
        "parameters": count_parameters(model),
        "teacher_file": str(teacher_file),
        "teacher_sha256": provenance["inputs"]["teacher_file"]["sha256"],
    }
    if test_h5 is not None:
        device = pick_device(device)
        test_x, test_y = load_split(test_h5, spec, device)
        result = evaluate(model.to(device), test_x, test_y, mean, std, K, False)
        metrics.update(test_accuracy=result["accuracy"], per_class_accuracy=result["per_class"])
        warning = teacher_warning(metrics, min_accuracy)
        if warning is not None:
            metrics["warning"] = warning
            print(f"\n{'!' * 80}\nWARNING: {warning}\n{'!' * 80}", file=sys.stderr, flush=True)
    record["provenance"] = provenance_json(provenance)
    save_torch(out_dir / "model.pt", record)
    write_json(out_dir / "metrics.json", metrics, provenance)
    return metrics
