"""Student training throughput: dfkd's loop vs the usual torchvision loop, side by side.

One model pair, one data set, measured in one run: student LeNet-5-half, teacher LeNet-5
(1x32x32, K=10), `--rows` synthetic uint8 images, batch 256, Adam + one-cycle schedule, KD loss
at T=20. Two augmentations: flip + translate 0.125 (continuous: the teacher must label every
augmented batch) and flips only (config.yaml's default student: two views per image).

Loops (images/s over a few hundred steps, in interleaved rounds after a warm-up each; the best
round counts, so that a burst of load from elsewhere hurts no loop more than another):
- dfkd:        uint8 tensor -> dfkd.training.TensorLoader -> dfkd.augment.augment_batch ->
               the teacher labels each augmented batch -> kd_loss -> Adam; the step is
               distill_student's step_loss, run by dfkd.training.fit itself;
- peer w=0/1:  torchvision Dataset of PIL images + DataLoader(num_workers=0 or 1) + per-sample
               RandomHorizontalFlip, RandomAffine(translate=0.125), ToTensor, Normalize, then
               the same teacher-online KD step (w=1 also uses the second core for loading);
- floor:       the same step on pre-made normalised batches: no loading, no augmentation;
- cached / online (augmentation off): student step on precomputed teacher logits vs the
               teacher run on every batch (both through fit);
- flips only: dfkd with the teacher online vs per-view logits (the teacher run once per view
               and row before training, what distill_student does for flips; the precompute is
               outside the timed steps, the end-to-end row includes it), and the peer with
               RandomHorizontalFlip only;
- flips + CutMix on half the images (config.yaml's `strong` student): the teacher labels every
               image online vs only the mixed ones beside per-view logits ("per_view+mixed",
               what distill_student does);
- distill_student end to end on a small HDF5 transfer set (its own images_per_second:
               optimisation steps only, every step counted, warm-up included).
Ratios and their targets: dfkd/peer >= 3x (for both augmentations), floor/dfkd <= 2x,
cached/online >= 1.4x; per-view/online (flips) and mixed-only/online (CutMix) have no target.

    python benchmarks/bench_training.py                  # 1 thread, 8192 rows, 3 x 80 steps a loop
    python benchmarks/bench_training.py --threads 1 2    # also 2 threads (only on an idle machine)
    python benchmarks/bench_training.py --quick          # 4096 rows, 2 x 48 steps a loop
Never run as a test.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch  # imported before timing: its import takes seconds
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from dfkd.io.artifacts import save_torch, write_h5, write_parquet
from dfkd.augment import augment_batch, unmixed_view_codes, view_codes
from dfkd.stages.distill import distill_student, kd_loss, kd_step_loss
from dfkd.models import build_model, model_record
from dfkd.training import (
    TensorLoader, fit, init_model, make_optimizer, make_scheduler, model_input, normalize,
    predict_logits, predict_view_logits, to_unit, training_config,
)

C, S, K = 1, 32, 10
MEAN, STD = [0.286], [0.353]  # the fmnist target's
BATCH = 256
AUGMENT = {"flip": True, "translate": 0.125}
FLIP = {"flip": True}  # config.yaml's student
CUTMIX = {"flip": True, "cutmix": {"p": 0.5, "alpha": 1.0}}  # config.yaml's `strong` student
TARGETS = {"dfkd/peer": (3.0, ">="), "floor/dfkd": (2.0, "<="), "cached/online": (1.4, ">="),
           "dfkd/peer flip": (3.0, ">="), "per-view/online": (None, ""), "mixed-only/online": (None, "")}


def student_block(augment: dict, epochs: int) -> dict:
    return {"arch": "lenet5_half", "epochs": epochs, "batch_size": BATCH, "optimizer": {"name": "adam", "lr": 3e-3},
            "schedule": "onecycle", "temperature": 20, "augment": augment, "seed": 0, "amp": False}


def synthetic_images(rows: int, seed: int = 0) -> torch.Tensor:
    """uint8 (rows, 1, 32, 32): smooth blobs plus noise, so that flips and shifts change pixels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(rows, C, 8, 8, generator=g)  # (N, 1, 8, 8)
    x = torch.nn.functional.interpolate(coarse, size=(S, S), mode="bilinear", align_corners=False)
    x = (0.8 * x + 0.2 * torch.rand(rows, C, S, S, generator=g)).clamp(0, 1)  # (N, 1, 32, 32)
    return (x * 255).round().to(torch.uint8)


def make_teacher() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model("lenet5", C, K, S).eval().requires_grad_(False)


class StepClock:
    """on_step callback: wall time of each step inside an epoch, after `warmup` steps.

    The first step of every epoch is left out (its interval would hold the previous epoch's
    evaluation and checkpoint), the same rule for every loop.
    """

    def __init__(self, warmup: int):
        self.warmup, self.count, self.last, self.seconds, self.steps = warmup, 0, None, 0.0, 0

    def __call__(self, epoch: int, step: int) -> None:
        now = time.perf_counter()
        if step > 0 and self.count >= self.warmup and self.last is not None:
            self.seconds += now - self.last
            self.steps += 1
        self.count += 1
        self.last = now

    def images_per_second(self) -> float:
        return self.steps * BATCH / max(self.seconds, 1e-9)


def epochs_for(rows: int, steps: int) -> int:
    return max(2, math.ceil(steps / max(rows // BATCH, 1)))


# ---------------------------------------------------------------------------- (a), (d): dfkd's loop
def run_fit(images: torch.Tensor, teacher, augment: dict, mode: str, steps: int, warmup: int) -> float:
    """images/s of dfkd.training.fit with distill_student's step (mode: online | cached | per_view |
    per_view+mixed)."""
    cfg = training_config(student_block(augment, epochs_for(len(images), steps + warmup)), "student")
    student = init_model(cfg["arch"], C, K, S, cfg["seed"], torch.device("cpu"))
    views = {"per_view": view_codes(augment), "per_view+mixed": unmixed_view_codes(augment)}.get(mode)
    logits = None  # (N, K), or (N, V, K) per view
    if mode == "cached":
        logits = predict_logits(teacher, images, MEAN, STD)
    elif views is not None:
        logits = predict_view_logits(teacher, images, views, MEAN, STD)
    loader = TensorLoader([images] if logits is None else [images, logits], cfg["batch_size"], cfg["seed"])

    # distill_student's own step (teacher online per augmented batch, or cached logits)
    step_loss = kd_step_loss(student, teacher, cfg["augment"], cfg["temperature"], (MEAN, STD), (MEAN, STD),
                             cached=logits is not None, views=views)

    clock = StepClock(warmup)
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        fit(student, loader, step_loss, lambda: {"accuracy": 0.0}, cfg, {"stage": "bench"}, Path(out),
            name="student", nan_hint="", on_step=clock)
    return clock.images_per_second()


# ---------------------------------------------------------------------------- (b): the peer loop
class PILDataset(Dataset):
    """What a torchvision user writes: PIL images, a per-sample transform."""

    def __init__(self, images: torch.Tensor, transform):
        self.images = [Image.fromarray(im[0].numpy(), mode="L") for im in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), i


def kd_step(student, teacher, optimizer, scheduler, x: torch.Tensor, t: torch.Tensor | None) -> None:
    if t is None:
        with torch.no_grad():
            t = teacher(x)  # (B, K)
    loss = kd_loss(student(x), t, 20.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


def run_peer(images: torch.Tensor, teacher, workers: int, steps: int, warmup: int, augment: dict = AUGMENT) -> float:
    shift = [transforms.RandomAffine(degrees=0, translate=(augment["translate"],) * 2)] if "translate" in augment else []
    transform = transforms.Compose([
        transforms.RandomHorizontalFlip(),
        *shift,
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    loader = DataLoader(PILDataset(images, transform), batch_size=BATCH, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    cfg = training_config(student_block(AUGMENT, 1), "student")
    student = init_model(cfg["arch"], C, K, S, cfg["seed"], torch.device("cpu")).train()
    optimizer = make_optimizer(student, cfg["optimizer"])
    epochs = epochs_for(len(images), steps + warmup)
    scheduler = make_scheduler(optimizer, cfg["schedule"], cfg["optimizer"]["lr"], epochs * len(loader))
    clock = StepClock(warmup)
    for epoch in range(epochs):
        for step, (x, _) in enumerate(loader):
            kd_step(student, teacher, optimizer, scheduler, x, None)
            clock(epoch, step)
    return clock.images_per_second()


# ---------------------------------------------------------------------------- (c): the compute floor
def run_floor(images: torch.Tensor, teacher, steps: int, warmup: int) -> float:
    cfg = training_config(student_block({}, 1), "student")
    student = init_model(cfg["arch"], C, K, S, cfg["seed"], torch.device("cpu")).train()
    optimizer = make_optimizer(student, cfg["optimizer"])
    scheduler = make_scheduler(optimizer, cfg["schedule"], cfg["optimizer"]["lr"], steps + warmup)
    batches = [normalize(images[i:i + BATCH], MEAN, STD) for i in range(0, len(images) - BATCH + 1, BATCH)]
    clock = StepClock(warmup)
    for step in range(steps + warmup):
        kd_step(student, teacher, optimizer, scheduler, batches[step % len(batches)], None)
        clock(0, step + 1)
    return clock.images_per_second()


# ---------------------------------------------------------------------------- end to end
def run_distill_student(images: torch.Tensor, teacher, epochs: int, augment: dict = AUGMENT) -> dict:
    """distill_student on an HDF5 transfer set of `images` (one source) and a 1024-row test set."""
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        labels = np.random.default_rng(0).integers(0, K, len(images))
        write_h5(root / "src.h5", {"images": images.numpy()}, None)
        write_h5(root / "test.h5", {"images": images[:1024].numpy(), "labels": labels[:1024]}, None)
        write_parquet(root / "set.parquet", pd.DataFrame({"source": "src", "index": np.arange(len(images)),
                                                          "label": labels}), None)
        save_torch(root / "teacher.pt", model_record(teacher, "lenet5", C, K, S, MEAN, STD, {"stage": "bench"}))
        target = {"channels": C, "image_size": S, "num_classes": K, "mean": MEAN, "std": STD,
                  "student": student_block(augment, epochs)}
        with contextlib.redirect_stdout(io.StringIO()):
            return distill_student(root / "teacher.pt", root / "set.parquet", {"src": root / "src.h5"}, None,
                                   root / "test.h5", target, root / "out")


# ---------------------------------------------------------------------------- where a step goes
def breakdown(images: torch.Tensor, teacher, repeats: int = 30) -> list[tuple[str, float]]:
    """Milliseconds per batch of each part of dfkd's augmented step (best of `repeats`)."""
    from dfkd.training import make_generator

    cfg = training_config(student_block(AUGMENT, 1), "student")
    student = init_model(cfg["arch"], C, K, S, cfg["seed"], torch.device("cpu")).train()
    optimizer = make_optimizer(student, cfg["optimizer"])
    batch = images[:BATCH]
    generator = make_generator("cpu", 0, "step", 0, 0)
    x = augment_batch(to_unit(batch), AUGMENT, generator)
    xn = model_input(x, MEAN, STD)
    with torch.no_grad():
        t = teacher(xn)

    def student_step():
        loss = kd_loss(student(xn), t, 20.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def teacher_forward():
        with torch.no_grad():
            teacher(xn)

    parts = [
        ("generator (seeded per step)", lambda: make_generator("cpu", 0, "step", 0, 1)),
        ("uint8 -> [0, 1]", lambda: to_unit(batch)),
        ("augment_batch (flip + translate)", lambda: augment_batch(x, AUGMENT, generator)),
        ("normalise (teacher + student)", lambda: (model_input(x, MEAN, STD), model_input(x, MEAN, STD))),
        ("teacher forward", teacher_forward),
        ("student forward + backward + Adam", student_step),
    ]
    out = []
    for name, function in parts:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
        out.append((name, 1e3 * min(times[3:] or times)))
    return out


# ---------------------------------------------------------------------------- main
def ratio_line(name: str, value: float) -> str:
    limit, sense = TARGETS[name]
    if limit is None:
        return f"{name:<16} {value:>7.2f}x  (no target)"
    met = value >= limit if sense == ">=" else value <= limit
    return f"{name:<16} {value:>7.2f}x  {sense} {limit:.1f}x   {'met' if met else 'NOT met'}"


def measure(images: torch.Tensor, teacher, threads: int, steps: int, warmup: int, rounds: int,
            e2e_epochs: int) -> dict:
    """One table at `threads` threads: each loop timed in `rounds` interleaved rounds, the best counts."""
    torch.set_num_threads(threads)
    per_round = max(1, steps // rounds)

    def fitted(augment, mode):
        return lambda: run_fit(images, teacher, augment, mode, per_round, warmup)

    loops = [
        ("dfkd", "TensorLoader", "batched", "online", fitted(AUGMENT, "online")),
        ("peer w=0", "DataLoader(0)", "per-sample", "online", lambda: run_peer(images, teacher, 0, per_round, warmup)),
        ("peer w=1", "DataLoader(1)", "per-sample", "online", lambda: run_peer(images, teacher, 1, per_round, warmup)),
        ("floor", "pre-made", "none", "online", lambda: run_floor(images, teacher, per_round, warmup)),
        ("dfkd no-aug", "TensorLoader", "off", "online", fitted({}, "online")),
        ("dfkd no-aug", "TensorLoader", "off", "cached", fitted({}, "cached")),
        ("dfkd flip", "TensorLoader", "batched", "online", fitted(FLIP, "online")),
        ("dfkd flip", "TensorLoader", "batched", "per_view", fitted(FLIP, "per_view")),
        ("dfkd cutmix", "TensorLoader", "batched", "online", fitted(CUTMIX, "online")),
        ("dfkd cutmix", "TensorLoader", "batched", "per_view+mixed", fitted(CUTMIX, "per_view+mixed")),
        ("peer flip w=0", "DataLoader(0)", "per-sample", "online",
         lambda: run_peer(images, teacher, 0, per_round, warmup, FLIP)),
        ("peer flip w=1", "DataLoader(1)", "per-sample", "online",
         lambda: run_peer(images, teacher, 1, per_round, warmup, FLIP)),
    ]
    print(f"\n{threads} thread(s), {len(images)} rows, batch {BATCH}; each loop: {rounds} interleaved rounds of "
          f"{per_round} timed steps after {warmup} warm-up, best round shown; load average before: "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for loop, _, _, logits, function in loops:
            runs.setdefault((loop, logits), []).append(function())
    speed = {key: max(values) for key, values in runs.items()}
    header = f"{'loop':<14} {'loader':<14} {'augment':<11} {'teacher':<14} {'img/s':>8} {'worst':>8}"
    print(header)
    print("-" * len(header))
    for loop, loader, augment, logits, _ in loops:
        print(f"{loop:<14} {loader:<14} {augment:<11} {logits:<14} {speed[(loop, logits)]:>8,.0f} "
              f"{min(runs[(loop, logits)]):>8,.0f}")
    if e2e_epochs:
        for name, augment in (("distill_student", AUGMENT), ("distill_student flip", FLIP)):
            started = time.perf_counter()
            metrics = run_distill_student(images, teacher, e2e_epochs, augment)
            wall = time.perf_counter() - started
            speed[(name, metrics["teacher_logits"])] = metrics["images_per_second"]
            print(f"{name:<29} {'batched':<11} {metrics['teacher_logits']:<14} {metrics['images_per_second']:>8,.0f} "
                  f"{'-':>8}  ({e2e_epochs} epochs, every step; {wall:.1f} s wall: I/O, evaluation, any views)")
    parts = breakdown(images, teacher)
    total = sum(ms for _, ms in parts)
    print(f"\nwhere dfkd's step goes ({threads} thread(s), ms per batch of {BATCH}, best of 30)")
    header = f"{'part':<36} {'ms':>7} {'share':>6}"
    print(header)
    print("-" * len(header))
    for name, ms in parts:
        print(f"{name:<36} {ms:>7.2f} {ms / total:>6.0%}")
    print(f"{'sum':<36} {total:>7.2f}   ({BATCH / total * 1e3:,.0f} img/s if nothing else cost)")
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
    ratios = {
        "dfkd/peer": speed[("dfkd", "online")] / max(speed[("peer w=0", "online")], speed[("peer w=1", "online")]),
        "floor/dfkd": speed[("floor", "online")] / speed[("dfkd", "online")],
        "cached/online": speed[("dfkd no-aug", "cached")] / speed[("dfkd no-aug", "online")],
        "dfkd/peer flip": speed[("dfkd flip", "per_view")] / max(speed[("peer flip w=0", "online")],
                                                                  speed[("peer flip w=1", "online")]),
        "per-view/online": speed[("dfkd flip", "per_view")] / speed[("dfkd flip", "online")],
        "mixed-only/online": speed[("dfkd cutmix", "per_view+mixed")] / speed[("dfkd cutmix", "online")],
    }
    header = f"{'ratio':<16} {'measured':>8}  {'target':<8}  verdict"
    print("\n" + header)
    print("-" * len(header))
    for name, value in ratios.items():
        print(ratio_line(name, value))
    print("(dfkd/peer is against the faster peer loader; peer w=1 loads on the second core; the flip rows compare\n"
          " dfkd's per-view loop, what distill_student runs for config.yaml's flips-only student)", flush=True)
    return {"speed": speed, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192, help="synthetic images (default 8192)")
    parser.add_argument("--steps", type=int, default=240, help="timed steps per loop, over all rounds (default 240)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per loop, best counts (default 3)")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps at the start of each round (default 8)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch threads, one table each (default 1; 2 only on an idle 2-core machine)")
    parser.add_argument("--e2e-epochs", type=int, default=3, help="distill_student epochs (0: skip)")
    parser.add_argument("--quick", action="store_true",
                        help="4096 rows, 2 rounds of 48 timed steps, 2 end-to-end epochs")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.steps, args.rounds, args.e2e_epochs = 4096, 96, 2, 2
    if args.rows < 2 * BATCH:
        parser.error(f"--rows must be at least {2 * BATCH}; got {args.rows}.")
    images = synthetic_images(args.rows)  # (N, 1, 32, 32) uint8
    teacher = make_teacher()
    results = {threads: measure(images, teacher, threads, args.steps, args.warmup, args.rounds, args.e2e_epochs)
               for threads in args.threads}
    if len(results) > 1:  # each loop in its best setting: what a user of either would pick on this machine
        for ratio, ours, peers in (("dfkd/peer", ("dfkd", "online"), ["peer w=0", "peer w=1"]),
                                   ("dfkd/peer flip", ("dfkd flip", "per_view"), ["peer flip w=0", "peer flip w=1"])):
            mine = max((r["speed"][ours], t) for t, r in results.items())
            peer = max((r["speed"][(loop, "online")], loop, t) for t, r in results.items() for loop in peers)
            print(f"\neach in its best setting: {ours[0]} {mine[0]:,.0f} img/s ({mine[1]} thread(s)) / {peer[1]} "
                  f"{peer[0]:,.0f} img/s ({peer[2]} thread(s)):")
            print(ratio_line(ratio, mine[0] / peer[0]))


if __name__ == "__main__":
    main()
