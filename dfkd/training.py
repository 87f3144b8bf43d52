"""The training loop shared by teacher training and distillation, and its small helpers.

Over 400 lines because resuming bitwise (loader, generators, checkpoint, SIGTERM) is one
mechanism that both training stages share; it is kept in one place so that it cannot drift.

In the spirit of airbench: the data sit on the device as one uint8 tensor, a ~30-line loader
shuffles with `torch.randperm` and an explicit generator, augmentation is batched. On top:
- every random draw of a step (shuffle, augmentation) comes from a generator seeded by
  (seed, epoch, step), and the global RNG (dropout) is forked, seeded and checkpointed, so a
  resumed run ends with the same weights as an uninterrupted one (bitwise, on the CPU);
- `out_dir/checkpoint.pt` (model, optimizer, scheduler, RNG states, epoch, step, log, config)
  is written atomically after every epoch and at the next step boundary after SIGTERM (what
  SLURM sends before it kills a job), after which the process exits with code 143 so that
  Snakemake retries the job and the retry resumes;
- channels_last models and inputs on every device (faster convolutions on CPU and GPU);
- on CUDA: bf16 autocast when `amp` is on, and no host sync inside an epoch
  (loss and the first non-finite step are accumulated on the device).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from dfkd.io.artifacts import atomic_path, load_torch, read_h5_array, save_torch
from dfkd.augment import apply_view, augment_active, augment_batch, augment_config, mixing_active
from dfkd.errors import DfkdError
from dfkd.models import build_model
from dfkd.schema import definition_defaults

TRAINING_DEFAULTS: dict[str, Any] = definition_defaults("training")  # the schema's, for blocks given by hand
LOG_COLUMNS = ("epoch", "loss", "test_accuracy", "lr", "seconds")
CHECKPOINT = "checkpoint.pt"
SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a job killed by SIGTERM


# ---------------------------------------------------------------------------- config
def training_config(cfg: Mapping[str, Any], section: str) -> dict[str, Any]:
    """The `teacher` / `student` block with defaults filled in; unknown keys are refused."""
    cfg = dict(cfg)
    unknown = sorted(set(cfg) - set(TRAINING_DEFAULTS) - {"arch"})
    if unknown:
        raise DfkdError(f"{section}: unknown option(s) {unknown}; known: {sorted([*TRAINING_DEFAULTS, 'arch'])}.")
    if "arch" not in cfg:
        raise DfkdError(f"{section}: 'arch' is required (e.g. lenet5, alexnet, resnet18).")
    optimizer = {**TRAINING_DEFAULTS["optimizer"], **cfg.get("optimizer", {})}
    unknown = sorted(set(optimizer) - set(TRAINING_DEFAULTS["optimizer"]))
    if unknown:
        raise DfkdError(f"{section}.optimizer: unknown option(s) {unknown}.")
    merged = {**TRAINING_DEFAULTS, **cfg, "optimizer": optimizer}
    merged["augment"] = augment_config(cfg.get("augment"))
    if section == "teacher" and mixing_active(merged["augment"]):  # its loss takes hard labels
        raise DfkdError("teacher.augment: mixup and cutmix are for students only (a mixed image has no hard "
                        "label; a student's teacher labels it). Set their p to 0 or remove them.")
    if merged["schedule"] not in ("constant", "onecycle", "cosine"):
        raise DfkdError(f"{section}.schedule is '{merged['schedule']}'; use constant, onecycle or cosine.")
    return merged


def target_spec(target: Mapping[str, Any]) -> dict[str, Any]:
    """The input spec of a target: channels, image_size, num_classes, mean, std."""
    missing = [key for key in ("channels", "image_size", "num_classes") if key not in target]
    if missing:
        raise DfkdError(f"target config lacks {missing}.")
    return {"channels": int(target["channels"]), "image_size": int(target["image_size"]),
            "num_classes": int(target["num_classes"]),
            "mean": [float(m) for m in target.get("mean", [0.5])], "std": [float(s) for s in target.get("std", [0.5])]}


def load_split(path: str | Path, spec: Mapping[str, Any], device: torch.device,
               labels: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (N, C, H, W) and int64 labels (N,) of an HDF5 data file, checked against `spec`."""
    images = read_h5_array(path, "images", ndim=4, dtypes=("uint8",))
    expected = (spec["channels"], spec["image_size"], spec["image_size"])
    if images.shape[1:] != expected or len(images) == 0:
        raise DfkdError(f"{path}:/images has shape {images.shape}; the target needs "
                        f"(N>0, {', '.join(map(str, expected))}). "
                        "Re-run data preparation for this target.")
    y = None
    if labels:
        y = read_h5_array(path, "labels", ndim=1)
        ok = len(y) == len(images) and y.dtype.kind in "iu" and 0 <= y.min() and y.max() < spec["num_classes"]
        if not ok:
            raise DfkdError(f"{path}:/labels must be {len(images)} integers in [0, {spec['num_classes']}); got "
                            f"{len(y)} values of dtype {y.dtype}{f', range [{y.min()}, {y.max()}]' if len(y) else ''}.")
        y = torch.from_numpy(y.astype("int64")).to(device)
    return torch.from_numpy(images).to(device), y


# ---------------------------------------------------------------------------- randomness
def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of plain values, e.g. (seed, "step", epoch, step)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(device: torch.device | str, *parts: Any) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(*parts))
    return generator


def autocast(device: torch.device, amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def init_model(arch: str, in_channels: int, num_classes: int, image_size: int, seed: int,
               device: torch.device) -> nn.Module:
    """Build a model whose initial weights depend only on `seed` (built on the CPU, then moved)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init"))
        model = build_model(arch, in_channels, num_classes, image_size)
    # channels_last on every device: oneDNN's CPU convolutions run LeNet-5-half's step 1.24x
    # faster in it (benchmarks/README.md), cuDNN's tensor-core kernels want it too.
    return model.to(device).to(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------- images
def to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float().div_(255)  # (N, C, H, W) in [0, 1]


def standardize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel; a single mean/std value is broadcast over channels."""
    channels = x.shape[1]
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise DfkdError(f"mean {list(mean)} / std {list(std)} must have 1 or {channels} values (one per channel).")
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return (x - mean[0]) / std[0]
    mean, std = [mean[0]] * channels if len(mean) == 1 else mean, [std[0]] * channels if len(std) == 1 else std
    return torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(channels)], 1)  # (N, C, H, W)


def normalize(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float32 (images / 255 - mean) / std."""
    return standardize(to_unit(images_uint8), mean, std)


def model_input(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[0, 1] images -> normalised network input, channels_last (as the models are)."""
    x = standardize(x, mean, std)  # (B, C, H, W)
    return x.contiguous(memory_format=torch.channels_last)


def prepare_batch(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                  augment: Mapping[str, Any] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 batch -> [0, 1] -> augmented (if any option is on) -> normalised network input."""
    x = to_unit(images_uint8)  # (B, C, H, W)
    if augment_active(augment):
        x = augment_batch(x, augment, generator)
    return model_input(x, mean, std)


class TensorLoader:
    """Batches of rows of tensors that live on one device, shuffled per epoch.

    The order of epoch e is `randperm(N)` drawn from a generator seeded by (seed, e), so it is
    the same on every run and can be re-entered at any step. Every row appears once per epoch;
    a final batch of one row is merged into the previous one (batch norm needs two).
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, seed: int, shuffle: bool = True):
        self.tensors = tuple(tensors)
        self.rows = len(self.tensors[0])
        assert all(len(t) == self.rows for t in self.tensors), [len(t) for t in self.tensors]
        assert self.rows > 0 and batch_size > 0, (self.rows, batch_size)
        self.device = self.tensors[0].device
        self.seed, self.shuffle = seed, shuffle
        self.bounds = list(range(0, self.rows, batch_size)) + [self.rows]
        if len(self.bounds) > 2 and self.bounds[-1] - self.bounds[-2] == 1:
            del self.bounds[-2]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.rows, device=self.device)
        generator = make_generator(self.device, self.seed, "shuffle", epoch)
        return torch.randperm(self.rows, generator=generator, device=self.device)  # (N,)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[int, tuple[torch.Tensor, ...]]]:
        """Yield (step, batch tensors) for the steps of `epoch` from `start` on."""
        order = self.order(epoch)
        for step in range(start, len(self)):
            index = order[self.bounds[step]:self.bounds[step + 1]]  # (B,)
            yield step, tuple(t[index] for t in self.tensors)


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, mean, std, amp: bool = False,
                   batch_size: int = 1024, view: int = 0) -> torch.Tensor:
    """float32 logits (N, K) of uint8 images (N, C, H, W), or of their view `view`
    (dfkd.augment.apply_view), in eval mode, in chunks."""
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        x = model_input(apply_view(to_unit(images[start:start + batch_size].to(device)), view), mean, std)
        with autocast(device, amp):
            chunks.append(model(x).float())  # (b, K)
    return torch.cat(chunks)


def predict_view_logits(model: nn.Module, images: torch.Tensor, views: Sequence[int], mean, std,
                        amp: bool = False) -> torch.Tensor:
    """float32 logits (N, V, K): slot v holds those of view `views[v]` of every image."""
    return torch.stack([predict_logits(model, images, mean, std, amp, view=code) for code in views], 1)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean, std, num_classes: int,
             amp: bool = False, batch_size: int = 1024) -> dict[str, Any]:
    """Top-1 accuracy and per-class accuracy (None for a class absent from `labels`)."""
    correct = torch.zeros(num_classes, device=labels.device)
    total = torch.zeros(num_classes, device=labels.device)
    for start in range(0, len(images), batch_size):
        y = labels[start:start + batch_size]  # (b,)
        hit = predict_logits(model, images[start:start + batch_size], mean, std, amp, batch_size).argmax(1) == y
        correct += torch.bincount(y[hit], minlength=num_classes)
        total += torch.bincount(y, minlength=num_classes)
    correct, total = correct.tolist(), total.tolist()
    return {
        "accuracy": sum(correct) / max(sum(total), 1),
        "per_class": [c / t if t else None for c, t in zip(correct, total)],
    }


# ---------------------------------------------------------------------------- optimisation
def make_optimizer(model: nn.Module, opt: Mapping[str, Any]) -> torch.optim.Optimizer:
    params, lr, wd = model.parameters(), opt["lr"], opt["weight_decay"]
    if opt["name"] == "sgd":
        momentum = opt["momentum"]
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=opt["nesterov"] and momentum > 0,
                               weight_decay=wd)
    if opt["name"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if opt["name"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise DfkdError(f"optimizer.name is '{opt['name']}'; use sgd, adam or adamw.")


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int):
    """A per-step learning-rate schedule over the whole run."""
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 2))
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


# ---------------------------------------------------------------------------- checkpoints
@dataclass
class FitResult:
    log: list[dict[str, Any]]  # one row per epoch, LOG_COLUMNS
    last_eval: dict[str, Any]  # evaluate_fn() after the last epoch
    train_seconds: float  # optimisation steps only, summed over attempts
    wall_seconds: float  # steps and evaluation, summed over attempts
    images: int  # training images processed

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.train_seconds, 1e-9)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def _identity_mismatch(path: Path, saved: str, wanted: str) -> DfkdError:
    old, new = _flatten(json.loads(saved)), _flatten(json.loads(wanted))
    diffs = [f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
             for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return DfkdError(
        f"{path} belongs to a different run ({'; '.join(diffs[:6])}{' ...' if len(diffs) > 6 else ''}). "
        "Delete it to start this run afresh, or restore the settings it was made with to resume it."
    )


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[dict[str, bool]]:
    """While inside, SIGTERM only sets flag['stop'] (the loop checks it at each step boundary)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["stop"] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def fit(
    model: nn.Module,
    loader: TensorLoader,
    step_loss: Callable[[tuple[torch.Tensor, ...], torch.Generator], torch.Tensor],
    evaluate_fn: Callable[[], dict[str, Any]],
    cfg: Mapping[str, Any],
    identity: Mapping[str, Any],
    out_dir: Path,
    *,
    name: str,
    nan_hint: str,
    on_step: Callable[[int, int], None] | None = None,
    fresh_on_mismatch: bool = False,
) -> FitResult:
    """Train `model` for cfg['epochs'] epochs of `loader`, resuming from out_dir/checkpoint.pt.

    step_loss(batch, generator) returns the scalar loss of one batch (called under autocast;
    all its randomness must come from `generator`). evaluate_fn() returns {"accuracy", ...}.
    `identity` (config, input hashes) must equal the checkpoint's for it to be resumed; a
    checkpoint of another identity is refused (DfkdError), or with `fresh_on_mismatch`
    ignored and overwritten (what a workflow re-running a job after a config edit wants).
    `on_step(epoch, step)` is called after every step (tests use it to interrupt).
    """
    # 1. optimizer, schedule, fresh progress
    device = next(model.parameters()).device
    out_dir = Path(out_dir)
    path = out_dir / CHECKPOINT
    identity_json = json.dumps(identity, sort_keys=True)
    epochs, steps, opt = cfg["epochs"], len(loader), cfg["optimizer"]
    optimizer = make_optimizer(model, opt)
    scheduler = make_scheduler(optimizer, cfg["schedule"], opt["lr"], epochs * steps)
    progress: dict[str, Any] = {"epoch": 0, "step": 0, "log": [], "loss_sum": 0.0, "epoch_seconds": 0.0,
                                "epoch_train_seconds": 0.0, "train_seconds": 0.0, "wall_seconds": 0.0,
                                "images": 0, "last_eval": None}
    cuda = [device.index or 0] if device.type == "cuda" else []

    def save() -> None:
        save_torch(path, {
            "identity": identity_json, "arch": identity.get("arch"),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(cuda[0]) if cuda else None, "progress": progress,
        })

    def check_finite(bad_step: torch.Tensor, epoch: int) -> None:
        if int(bad_step) >= 0:
            raise DfkdError(f"{name}: the loss became NaN or infinite at epoch {epoch + 1}, step {int(bad_step) + 1} "
                            f"of {steps}. {nan_hint}")

    with torch.random.fork_rng(devices=cuda), _sigterm_flag() as flag:
        # 2. resume (the global RNG drives dropout; fork, seed, and restore it from the checkpoint)
        torch.manual_seed(derive_seed(cfg["seed"], "global"))
        state = load_torch(path) if path.exists() else None
        if state is not None and state.get("identity") != identity_json:
            mismatch = _identity_mismatch(path, state.get("identity", "{}"), identity_json)
            if not fresh_on_mismatch:
                raise mismatch
            print(f"{name}: starting afresh, overwriting a checkpoint of other settings: {mismatch}", flush=True)
            state = None
        if state is not None:
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                torch.set_rng_state(state["rng_cpu"])
                if cuda and state["rng_cuda"] is not None:
                    torch.cuda.set_rng_state(state["rng_cuda"], cuda[0])
                progress = state["progress"]
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise DfkdError(
                    f"{path} cannot be resumed: it does not fit this {name} ({cfg['arch']}) "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). "
                    "Delete it to start this run afresh."
                ) from exc
            print(f"{name}: resuming from {path} at epoch {progress['epoch'] + 1}, step {progress['step'] + 1}",
                  flush=True)

        # 3. epochs: steps with no host sync, then evaluation, log row, checkpoint
        for epoch in range(progress["epoch"], epochs):
            model.train()
            started = time.perf_counter()
            loss_sum = torch.tensor(progress["loss_sum"], device=device)
            bad_step = torch.tensor(-1, device=device)
            images = 0
            for step, batch in loader.batches(epoch, progress["step"]):
                generator = make_generator(device, cfg["seed"], "step", epoch, step)
                with autocast(device, cfg["amp"]):
                    loss = step_loss(batch, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss = loss.detach().float()
                loss_sum += loss
                bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss), step, bad_step)
                images += batch[0].shape[0]
                if on_step is not None:
                    on_step(epoch, step)
                if flag["stop"] and step + 1 < steps:  # SIGTERM: save at this step boundary and exit
                    check_finite(bad_step, epoch)
                    elapsed = time.perf_counter() - started
                    progress.update(epoch=epoch, step=step + 1, loss_sum=float(loss_sum),
                                    images=progress["images"] + images,
                                    epoch_seconds=progress["epoch_seconds"] + elapsed,
                                    epoch_train_seconds=progress["epoch_train_seconds"] + elapsed,
                                    train_seconds=progress["train_seconds"] + elapsed,
                                    wall_seconds=progress["wall_seconds"] + elapsed)
                    save()
                    print(f"{name}: SIGTERM; saved {path} at epoch {epoch + 1}, step {step + 1}. "
                          "Re-run to resume.", flush=True)
                    raise SystemExit(SIGTERM_EXIT)
            check_finite(bad_step, epoch)
            loss_mean = float(loss_sum) / steps  # host sync: the epoch's steps are done
            train_seconds = time.perf_counter() - started
            last_eval = evaluate_fn()
            epoch_seconds = progress["epoch_seconds"] + time.perf_counter() - started
            epoch_train = progress["epoch_train_seconds"] + train_seconds
            row = {"epoch": epoch + 1, "loss": loss_mean, "test_accuracy": last_eval["accuracy"],
                   "lr": scheduler.get_last_lr()[0], "seconds": epoch_seconds}
            progress.update(epoch=epoch + 1, step=0, loss_sum=0.0, epoch_seconds=0.0, epoch_train_seconds=0.0,
                            log=progress["log"] + [row], images=progress["images"] + images,
                            train_seconds=progress["train_seconds"] + train_seconds,
                            wall_seconds=progress["wall_seconds"] + time.perf_counter() - started,
                            last_eval=last_eval)
            save()
            print(f"{name} epoch {epoch + 1}/{epochs}  loss {loss_mean:.4f}  test_acc {last_eval['accuracy']:.4f}  "
                  f"{loader.rows / max(epoch_train, 1e-9):,.0f} img/s  {epoch_seconds:.1f}s", flush=True)
            if flag["stop"]:
                print(f"{name}: SIGTERM; saved {path} after epoch {epoch + 1}. Re-run to resume.", flush=True)
                raise SystemExit(SIGTERM_EXIT)

    if progress["last_eval"] is None:  # zero epochs
        progress["last_eval"] = evaluate_fn()
    return FitResult(progress["log"], progress["last_eval"], progress["train_seconds"],
                     progress["wall_seconds"], progress["images"])


def write_log_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """The per-epoch log (LOG_COLUMNS), written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
