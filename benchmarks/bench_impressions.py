"""What Data Impressions cost on this CPU, and how well they match their targets per iteration count.

For a teacher file (results/{target}/teacher/model.pt), with dfkd's own synthesiser
(`dfkd.synthesis.impressions.synthesize_batch`, the settings' defaults unless given):

- cost: `--cost` impressions at the default iteration count, one batch after another as the
  `synthesize` stage makes them: seconds, images/s, seconds per 1,000 impressions;
- curve: `--count` impressions (equal per class, the same seeds) made at each of `--iterations`;
  for each: the mean KL divergence of the teacher's softmax at T on the stored uint8 images from
  their targets (and to a shuffled target, the no-match baseline), how often the teacher's label
  is the class the image was made for, and the share of saturated pixels (0 or 255).
  Each count is its own run from the same start (the same batches and seeds): what a source with
  that `iterations` stores.

Prints a table and the machine (`lscpu` model name), torch threads and the git commit; `--json`
writes the same numbers. Never run as a test.

    python benchmarks/bench_impressions.py --teacher results/fmnist/teacher/model.pt
    python benchmarks/bench_impressions.py --teacher T --count 200 --iterations 50 100 --lr 0.01
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make(teacher, spec, settings, count, batch, seed):
    """(images, targets, made_for, seconds) of `count` impressions made as the stage makes them."""
    from dfkd.synthesis.driver import equal_classes
    from dfkd.synthesis.impressions import synthesize_batch
    from dfkd.training import make_generator

    classes = equal_classes(count, list(range(spec.num_classes)))
    images, targets, start = [], [], time.perf_counter()
    for b, first in enumerate(range(0, count, batch)):
        part = torch.from_numpy(classes[first : first + batch])
        x, t = synthesize_batch(teacher, part, spec, settings, make_generator("cpu", seed, "synthesis", b),
                                torch.device("cpu"))
        images.append(x), targets.append(t)
    return torch.cat(images), torch.cat(targets), classes, time.perf_counter() - start


def match(teacher, spec, images, targets, made_for, temperature) -> dict:
    from dfkd.synthesis.driver import label_batch

    labels, kl = label_batch(teacher, images, targets, spec, temperature, torch.device("cpu"))
    shuffled = targets[torch.from_numpy(np.random.default_rng(0).permutation(len(targets)))]
    _, kl_other = label_batch(teacher, images, shuffled, spec, temperature, torch.device("cpu"))
    pixels = images.numpy()
    return {"mean_kl": float(kl.mean()), "mean_kl_shuffled": float(kl_other.mean()),
            "made_for_agreement": float((labels == made_for).mean()),
            "target_top_agreement": float((labels == targets.argmax(1).numpy()).mean()),
            "saturated_pixels": float(((pixels == 0) | (pixels == 255)).mean())}


def main() -> None:
    from dfkd.models import load_model
    from dfkd.synthesis.base import SynthesisSpec
    from dfkd.synthesis.impressions import PROPERTIES

    defaults = {key: prop["default"] for key, prop in PROPERTIES.items()}
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--count", type=int, default=500, help="impressions per point of the curve")
    parser.add_argument("--iterations", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--cost", type=int, default=1000, help="impressions timed at the default iterations (0: skip)")
    parser.add_argument("--lr", type=float, default=defaults["lr"])
    parser.add_argument("--aim", default=defaults["aim"], choices=["top", "none"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, record = load_model(args.teacher)
    model.eval()
    for weight in model.parameters():
        weight.requires_grad_(False)
    spec = SynthesisSpec(record["in_channels"], record["image_size"], record["num_classes"],
                         tuple(record["mean"]), tuple(record["std"]))
    settings = {**defaults, "lr": args.lr, "aim": args.aim}
    result = {"machine": machine(), "threads": torch.get_num_threads(), "commit": commit(), "teacher": args.teacher,
              "settings": settings, "batch": args.batch, "count": args.count, "curve": [], "cost": None}
    print(f"machine: {result['machine']}, {result['threads']} thread(s), commit {result['commit']}; lr {args.lr}, "
          f"aim {args.aim}, batch {args.batch}, T {settings['temperature']}, betas {settings['betas']}")
    if args.cost:
        _, _, _, seconds = make(model, spec, settings, args.cost, args.batch, args.seed)
        result["cost"] = {"impressions": args.cost, "iterations": settings["iterations"], "seconds": round(seconds, 2),
                          "images_per_second": round(args.cost / seconds, 2),
                          "seconds_per_1000": round(1000 * seconds / args.cost, 1)}
        print(f"cost at {settings['iterations']} iterations: {args.cost} impressions in {seconds:.1f} s = "
              f"{args.cost / seconds:.2f} images/s, {1000 * seconds / args.cost:.1f} s per 1,000")
    print(f"{'iterations':>10} {'KL own':>8} {'KL shuffled':>11} {'made-for':>9} {'target-top':>10} "
          f"{'saturated':>9} {'s/1000':>7}")
    for iterations in args.iterations:
        images, targets, made_for, seconds = make(model, spec, {**settings, "iterations": iterations}, args.count,
                                                  args.batch, args.seed)
        row = {"iterations": iterations, **match(model, spec, images, targets, made_for, settings["temperature"]),
               "seconds_per_1000": round(1000 * seconds / args.count, 1)}
        result["curve"].append(row)
        print(f"{iterations:>10} {row['mean_kl']:>8.3f} {row['mean_kl_shuffled']:>11.3f} "
              f"{row['made_for_agreement']:>9.1%} {row['target_top_agreement']:>10.1%} "
              f"{row['saturated_pixels']:>9.1%} {row['seconds_per_1000']:>7.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
