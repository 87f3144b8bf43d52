"""Cost of generator `inversion` (DeepInversion, dfkd.synthesis.inversion) per 1,000 images.

One batch of `--batch` images (classes interleaved 0, 1, ..., K-1, 0, ..., as DeepInversion's
CIFAR-10 script makes its targets) is inverted for `--iterations` steps with the paper's
weights, on the CPU; the seconds are scaled to 1,000 images, and to the paper's 2,000
iterations (the cost is linear in the iterations: every step is one forward and backward
pass of the same batch). It also reports how many of the stored uint8 images the teacher
labels as the class they were made for, and each BatchNorm layer's statistics distance
before (the starting noise) and after.

    python benchmarks/bench_inversion.py --teacher results/fmnist_bn/teacher/model.pt
    python benchmarks/bench_inversion.py             # an untrained lenet5_bn (cost only)
    python benchmarks/bench_inversion.py --iterations 100 --threads 1

The teacher is any dfkd model file (`teacher/model.pt`) whose layers hold BatchNorm.
Never run as a test.

Measured 2026-12-06 (commit ea3d873's inversion), fmnist_bn's LeNet-5-BN teacher (12 epochs,
90.88% test accuracy), batch 256, one thread on a shared 2-core AMD EPYC (load average 4 to
7, so the times are upper bounds):

| iterations | s per 1,000 images | ms per image-iteration | target class hit | mean confidence | BN distance (layer 1, 2) |
|---|---|---|---|---|---|
| 0 (noise) | - | - | - | - | 7.35, 1.67 |
| 50 | 17.8 | 0.356 | 72.3% | 0.651 | 1.64, 0.447 |
| 200 | 71.4 | 0.357 | 99.2% | 0.952 | 0.133, 0.093 |
| 2,000 (paper) | 837 | 0.418 | 100.0% | 0.983 | 0.115, 0.091 |
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from dfkd.models import build_model, load_model
from dfkd.synthesis.inversion import DEFAULTS, bn_distances, starting_noise, synthesize_batch, to_uint8
from dfkd.training import normalize


def teacher_and_spec(path: str | None):
    """A dfkd model file's teacher and spec, or an untrained Fashion-MNIST-shaped lenet5_bn."""
    if path is None:
        torch.manual_seed(0)
        return (build_model("lenet5_bn", 1, 10, 32).eval(),
                {"channels": 1, "image_size": 32, "num_classes": 10, "mean": [0.286], "std": [0.353]}, "untrained lenet5_bn")
    model, record = load_model(path)
    spec = {"channels": record["in_channels"], "image_size": record["image_size"], "num_classes": record["num_classes"],
            "mean": record["mean"], "std": record["std"]}
    return model.eval(), spec, f"{record['arch']} from {path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="a dfkd model file (teacher/model.pt) with BatchNorm; default: untrained lenet5_bn")
    parser.add_argument("--batch", type=int, default=256, help="images per batch (DeepInversion: 256)")
    parser.add_argument("--iterations", type=int, default=200, help="Adam steps (the paper: 2,000; fewer to measure)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    teacher, spec, what = teacher_and_spec(args.teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    K, cpu = spec["num_classes"], torch.device("cpu")
    classes = torch.arange(args.batch) % K  # (batch,) int64, interleaved
    noise = to_uint8(starting_noise(args.batch, spec, torch.Generator().manual_seed(args.seed), cpu), spec)
    synthesize_batch(teacher, classes[:K], spec, {"iterations": 2}, torch.Generator().manual_seed(0), cpu)  # warm-up

    start = time.perf_counter()
    images, _ = synthesize_batch(teacher, classes, spec, {"iterations": args.iterations},
                                    torch.Generator().manual_seed(args.seed), cpu)
    seconds = time.perf_counter() - start

    with torch.no_grad():
        p = torch.softmax(teacher(normalize(images, spec["mean"], spec["std"])), 1)  # (batch, K)
    labels = p.argmax(1)
    per_1000 = seconds * 1000 / args.batch
    print(f"teacher: {what}; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s)")
    print(f"settings: {DEFAULTS | {'iterations': args.iterations}}, batch {args.batch}")
    print(f"{args.batch} images x {args.iterations} iterations: {seconds:.1f} s; {1000 * seconds / args.iterations / args.batch:.3f} "
          f"ms per image-iteration")
    print(f"per 1,000 images: {per_1000:.1f} s at {args.iterations} iterations; "
          f"{per_1000 * DEFAULTS['iterations'] / args.iterations:.0f} s at the paper's {DEFAULTS['iterations']:,}")
    print(f"teacher labels the stored uint8 image as its target class: {100 * float((labels == classes).float().mean()):.1f}%; "
          f"mean confidence {float(p.max(1).values.mean()):.3f}")
    before, after = bn_distances(teacher, noise, spec), bn_distances(teacher, images, spec)
    print("BN statistics distance per layer, starting noise -> result: "
          + ", ".join(f"{b:.3g} -> {a:.3g}" for b, a in zip(before, after)))


if __name__ == "__main__":
    main()
