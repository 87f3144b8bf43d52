"""Distillation: teacher/model.pt + transfer/{set}.parquet + data/{source}.h5 -> students/{run}/.

The student learns from the teacher's soft outputs on the transfer set only (no labels, no
other loss), evaluated each epoch on the target's test set. Without augmentation the teacher's
logits are fixed per row: they are read from features/{source}.h5 when given ("cached") or
computed once here ("online"). With flips and/or inversions only, an image has at most four
views: the teacher's logits are computed once per view and row before training ("per_view";
the images the student sees are the same, the teacher's forward pass leaves the step). With
other augmentation the teacher labels every augmented batch ("online"). Mixup and CutMix
(dfkd.augment.mix_batch) need the teacher online: it labels the very mixed images the student
sees, and the loss stays the KD loss alone (no interpolated labels). When flips and inversions
are the only other options, the images a step leaves unmixed are still views of their rows and
take their precomputed per-view logits: the teacher runs on the mixed images alone
("per_view+mixed"; with CutMix on half the images, 1.13x the online step's speed, measured on a
loaded 2-core CPU in benchmarks/README.md).
Outputs: model.pt, metrics.json (the final test accuracy is the headline), log.csv, and the
resumable checkpoint.pt (see dfkd.training.fit).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from dfkd.io.artifacts import read_parquet, save_torch, write_json
from dfkd.augment import (
    VIEW_BITS, VIEW_MIXED, augment_active, augment_batch, augment_batch_with_views, mixing_active,
    unmixed_view_codes, view_codes,
)
from dfkd.device import describe_device, pick_device
from dfkd.errors import DfkdError
from dfkd.models import count_parameters, load_model, model_record
from dfkd.io.provenance import make_provenance
from dfkd.io.rows import gather_manifest
from dfkd.training import (
    TensorLoader, evaluate, fit, init_model, load_split, model_input,
    predict_logits, predict_view_logits, target_spec, to_unit, training_config, write_log_csv,
)

HELDOUT_SHARE = 0.1  # without a test split: the share of transfer rows held out to score agreement


def heldout_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of an n-row manifest: the last HELDOUT_SHARE of a seeded
    permutation is held out (at least one row, and one left to train on), each part sorted."""
    held = min(max(1, int(round(HELDOUT_SHARE * n))), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n - held]), np.sort(order[n - held:])


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge-distillation loss (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a
    Neural Network"), the only loss of the study (Nayak et al., WACV 2021):

        L = T^2 * (1/N) * sum_i KL(p_i || q_i),   p_i = softmax(t_i / T),  q_i = softmax(s_i / T),
        KL(p || q) = sum_k p_k (log p_k - log q_k).

    The T^2 factor keeps gradient magnitudes comparable across temperatures. It differs from
    ZSKD's T^2 * CE(q, p) only by the teacher's entropy, a constant for the student.
    Logits are (N, K); computed in float32.
    """
    T = float(temperature)
    log_q = F.log_softmax(student_logits.float() / T, dim=1)  # (N, K)
    log_p = F.log_softmax(teacher_logits.float() / T, dim=1)  # (N, K)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * (T * T)


def _check_teacher(record: Mapping[str, Any], spec: Mapping[str, Any], path: Path) -> None:
    pairs = [("in_channels", "channels"), ("image_size", "image_size"), ("num_classes", "num_classes")]
    wrong = [f"{mine}={record[mine]} (target {theirs}={spec[theirs]})" for mine, theirs in pairs
             if record[mine] != spec[theirs]]
    if wrong:
        raise DfkdError(f"teacher {path} does not fit the target: {', '.join(wrong)}. Retrain the teacher.")


def kd_step_loss(student, teacher, augment: Mapping[str, Any], temperature: float,
                 student_norm: tuple, teacher_norm: tuple, cached: bool,
                 views: Sequence[int] | None = None) -> Callable:
    """The loss of one distillation step, for `dfkd.training.fit` (and the benchmarks).

    A batch is `(images_uint8,)`, or `(images_uint8, teacher_logits)` when `cached`:
    logits (B, K), or (B, V, K) with `views` (the view codes of the V slots, see
    `dfkd.augment.view_codes`), of which each augmented image takes its view's; with mixing on,
    `views` are those of the unmixed images (`unmixed_view_codes`) and the teacher labels the
    mixed ones. Otherwise, with augmentation on, the teacher (eval mode) labels every
    augmented batch.
    """
    augmenting, mixing = augment_active(augment), mixing_active(augment)
    if views is not None:
        assert cached and augmenting, "per-view teacher logits need augmentation and cached logits"
        device = next(student.parameters()).device  # made there once: no host-to-device copy per step
        slot_of = torch.full((max(views) + 1,), -1, dtype=torch.int64, device=device)
        slot_of[list(views)] = torch.arange(len(views), device=device)

    def step_loss(batch, generator):
        x = to_unit(batch[0])  # (B, C, H, W) in [0, 1]
        if views is not None:
            x, code = augment_batch_with_views(x, augment, generator)  # code: (B,)
            slot = slot_of[code & VIEW_BITS]  # (B,)
            t = batch[1][torch.arange(len(slot), device=slot.device), slot]  # (B, K): each image's view
            if mixing:  # a mixed image is no view: the teacher labels those alone
                mixed = (code & VIEW_MIXED).nonzero().squeeze(1)  # (b,); a host sync on a GPU, cheap there
                if len(mixed):
                    with torch.no_grad():
                        online = teacher(model_input(x[mixed], *teacher_norm))  # (b, K)
                    t = t.index_copy(0, mixed, online.to(t.dtype))
        else:
            if augmenting:
                x = augment_batch(x, augment, generator)
            if cached:
                t = batch[1]  # (B, K)
            else:
                with torch.no_grad():
                    t = teacher(model_input(x, *teacher_norm))  # (B, K)
        return kd_loss(student(model_input(x, *student_norm)), t, temperature)

    return step_loss


def distill_student(
    teacher_path: Path,
    manifest: Path,
    data_files: Mapping[str, Path],
    feature_files: Mapping[str, Path] | None,
    test_h5: Path | None,
    target: Mapping[str, Any],
    out_dir: Path,
    *,
    on_step: Callable[[int, int], None] | None = None,
    fresh_on_mismatch: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """Distil the target's student on one transfer set; write model.pt, metrics.json, log.csv; return the metrics.

    `manifest` lists (source, index, label) rows; `data_files[source]` holds their images and
    `feature_files[source]` (optional) the teacher's logits. Resumes from out_dir/checkpoint.pt;
    `on_step` and `fresh_on_mismatch` as in train_teacher. Without `test_h5` (a target without a
    test split) the student is scored by its agreement with the teacher's labels on held-out
    transfer rows (`heldout_rows`, never trained on): `teacher_agreement` replaces `test_accuracy`.
    """
    # 1. config, teacher, the transfer set's sources
    out_dir = Path(out_dir)
    cfg, spec, device = training_config(target["student"], "student"), target_spec(target), pick_device(device)
    teacher, record = load_model(teacher_path)
    _check_teacher(record, spec, Path(teacher_path))
    frame = read_parquet(manifest, ["source", "index", "label"])
    if len(frame) == 0:
        raise DfkdError(f"{manifest} lists no rows; the transfer set is empty (check its sources and caps).")
    sources = list(dict.fromkeys(frame["source"]))  # in order of first appearance
    missing = [source for source in sources if source not in data_files]
    if missing:
        raise DfkdError(f"{manifest} draws on sources {missing} but no data file was given for them.")
    augmenting = augment_active(cfg["augment"])
    # per-view logits: flips/inversions the only augmentation, or beside mixing (None otherwise)
    mixing = mixing_active(cfg["augment"])
    views = unmixed_view_codes(cfg["augment"]) if mixing else view_codes(cfg["augment"])
    cached = not augmenting and feature_files is not None
    if cached and any(source not in feature_files for source in sources):
        raise DfkdError(f"no feature file given for sources {[s for s in sources if s not in feature_files]}.")
    inputs = {"teacher": teacher_path, "manifest": manifest, **({"test": test_h5} if test_h5 is not None else {}),
              **{f"data/{source}": data_files[source] for source in sources},
              **({f"features/{source}": feature_files[source] for source in sources} if cached else {})}
    teacher_logits = "cached" if cached else "online" if not views else "per_view+mixed" if mixing else "per_view"
    heldout = {} if test_h5 is not None else {"heldout_share": HELDOUT_SHARE}
    provenance = make_provenance("distill", {"target": spec, "student": cfg, "teacher_logits": teacher_logits,
                                             **heldout}, inputs, cfg["seed"])
    identity = {"stage": "distill", "arch": cfg["arch"], "config": provenance["config"],
                "inputs": {role: entry["sha256"] for role, entry in provenance["inputs"].items()}}

    # 2. the transfer set's images (and teacher logits) in manifest order, on the device
    C, S, K = spec["channels"], spec["image_size"], spec["num_classes"]
    if frame["index"].dtype.kind not in "iu":
        raise DfkdError(f"{manifest}: column 'index' has dtype {frame['index'].dtype}; expected integers.")
    images = gather_manifest(frame, data_files, "images", (C, S, S), ("uint8",), what="data")
    images = torch.from_numpy(images).to(device)  # (M, C, S, S) uint8
    if test_h5 is not None:
        test_x, test_y = load_split(test_h5, spec, device)
    else:  # score agreement with the teacher's labels on rows the student never sees
        keep, held = heldout_rows(len(frame), cfg["seed"])
        test_x = images[torch.from_numpy(held).to(device)]  # (H, C, S, S)
        test_y = torch.from_numpy(frame["label"].to_numpy()[held].astype(np.int64)).to(device)  # (H,)
    teacher = teacher.to(device).requires_grad_(False).to(memory_format=torch.channels_last)
    t_mean, t_std = record["mean"], record["std"]
    logits = None  # (M, K) float32 when fixed per row
    if cached:
        logits = gather_manifest(frame, feature_files, "logits", (K,), ("f2", "f4", "f8")).astype(np.float32)
        if not np.isfinite(logits).all():
            raise DfkdError(f"teacher logits in {[str(feature_files[s]) for s in sources]} hold NaN or inf; "
                            "re-run feature extraction (check the teacher).")
        logits = torch.from_numpy(logits).to(device)
    elif views:
        logits = predict_view_logits(teacher, images, views, t_mean, t_std, cfg["amp"])  # (M, V, K)
    elif not augmenting:
        logits = predict_logits(teacher, images, t_mean, t_std, cfg["amp"])
    if test_h5 is None:
        rows = torch.from_numpy(keep).to(device)
        images, logits = images[rows], None if logits is None else logits[rows]

    # 3. student, loader, loss
    mean, std, T = spec["mean"], spec["std"], cfg["temperature"]
    student = init_model(cfg["arch"], C, K, S, cfg["seed"], device)
    loader = TensorLoader([images] if logits is None else [images, logits], cfg["batch_size"], cfg["seed"])

    step_loss = kd_step_loss(student, teacher, cfg["augment"], T, (mean, std), (t_mean, t_std),
                             cached=logits is not None, views=views)

    # 4. train (resumes from out_dir/checkpoint.pt)
    result = fit(student, loader, step_loss, lambda: evaluate(student, test_x, test_y, mean, std, K, cfg["amp"]),
                 cfg, identity, out_dir, name="student", on_step=on_step,
                 fresh_on_mismatch=fresh_on_mismatch,
                 nan_hint=f"Lower student.optimizer.lr (now {cfg['optimizer']['lr']}) or change student.temperature "
                          f"(now {T}).")

    # 5. outputs: model, log, metrics (metrics last)
    save_torch(out_dir / "model.pt", model_record(student, cfg["arch"], C, K, S, mean, std, provenance))
    write_log_csv(out_dir / "log.csv", result.log)
    best = max(result.log, key=lambda row: row["test_accuracy"])
    if test_h5 is None:
        scores = {
            "teacher_agreement": result.last_eval["accuracy"],
            "per_class_agreement": result.last_eval["per_class"],
            "heldout_rows": int(len(held)),
            "evaluation": f"no test split: agreement of the student's top-1 class with the teacher's label on "
                          f"{len(held)} held-out transfer rows ({HELDOUT_SHARE:.0%}, seed {cfg['seed']}, never "
                          "trained on); log.csv's test_accuracy column holds this agreement",
        }
    else:
        scores = {
            "test_accuracy": result.last_eval["accuracy"],
            "per_class_accuracy": result.last_eval["per_class"],
            "best_epoch_accuracy": best["test_accuracy"],
            "best_epoch": best["epoch"],
            "best_epoch_note": "best_epoch and best_epoch_accuracy are selected on the test set (optimistic); "
                               "test_accuracy, after the last epoch, is the headline",
            "teacher_test_accuracy": evaluate(teacher, test_x, test_y, t_mean, t_std, K, cfg["amp"])["accuracy"],
        }
    metrics = {
        **scores,
        "arch": cfg["arch"],
        "parameters": count_parameters(student),
        "temperature": T,
        "epochs": cfg["epochs"],
        "transfer_rows": len(frame) if test_h5 is not None else int(len(keep)),
        "transfer_rows_by_source": {source: int((frame["source"] == source).sum()) for source in sources},
        "teacher_logits": teacher_logits,
        "seconds": result.wall_seconds,
        "train_seconds": result.train_seconds,
        "images_per_second": result.images_per_second,
        "device": describe_device(device),
    }
    write_json(out_dir / "metrics.json", metrics, provenance)
    return metrics
