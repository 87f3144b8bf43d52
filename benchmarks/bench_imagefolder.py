"""Peak memory of the `imagefolder` source on a folder of camera-size photos (issue 18).

Writes folders of 12-megapixel photos (4000 x 3000 RGB, smooth colour waves plus sensor-like
noise; JPEG quality 90 and PNG) into a temporary folder, then loads each folder at a target
spec (default 3 x 32 x 32) in a fresh Python process per case and reads that process's peak
resident memory (Linux `VmHWM`, reset after a warm-up load with /proc/self/clear_refs, so
the figure is the load alone, over the RSS it started from: torch, PIL and numpy imported).

Two loaders per folder:
- `dfkd`: `dfkd.sources.load_source`, the shipped loader (one photo decoded at a time, JPEGs
  drafted at reduced scale, large images cropped and resized before the next is opened);
- `pre-fix`: the loader before the fix, restated here (`hold_all`): every photo decoded at
  full size and held, in groups of equal shape, until 2048 had been read, then converted with
  `convert.to_spec`. Its peak grows with the number of photos.

The bound checked for `dfkd`: peak <= output + 3 decoded photos (36 MB each at 12 MP), for
any number of photos. The photos of one folder are copies of one generated photo per format
(memory does not depend on the content; the copy is decoded from disk each time).

    python benchmarks/bench_imagefolder.py                  # 10 and 30 photos per format (~2 min)
    python benchmarks/bench_imagefolder.py --quick          # 4 and 12 photos per format
    python benchmarks/bench_imagefolder.py --quick --formats jpg --prefix-max 12
PNG decoding dominates the time (~0.6 s per 12 MP photo on one core).
Linux only (reads /proc). Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


# ---------------------------------------------------------------------------- photos
def write_photos(folder: Path, fmt: str, count: int, width: int, height: int) -> int:
    """`count` copies of one generated photo in `folder`; returns the decoded size in bytes."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / 211.0  # (H, W)
    photo = np.stack([np.sin(x), np.cos(1.3 * y), np.sin(x + y)], -1) * 90 + 128  # (H, W, 3)
    photo += rng.normal(0, 6, photo.shape).astype(np.float32)
    first = folder / f"0000.{fmt}"
    image = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))
    if fmt == "jpg":
        image.save(first, quality=90)
    else:
        image.save(first, compress_level=1)
    for i in range(1, count):
        shutil.copy(first, folder / f"{i:04d}.{fmt}")
    return width * height * 3


# ---------------------------------------------------------------------------- child process
def vm(key: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(key + r":\s+(\d+) kB", text).group(1)) * 1024


def hold_all(root: Path, spec) -> np.ndarray:
    """The pre-fix loader: decode every file at full size, hold them, then convert."""
    from PIL import Image

    from dfkd.sources.convert import to_spec

    files = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    pending: dict[tuple, list[tuple[int, np.ndarray]]] = {}  # shape -> [(row, image)]
    for row, path in enumerate(files):
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image.convert("RGB"), np.uint8).transpose(2, 0, 1)  # (C, H, W)
        pending.setdefault(array.shape, []).append((row, array))
    out = np.empty((len(files), spec.channels, spec.image_size, spec.image_size), np.uint8)
    for rows_images in pending.values():
        batch = np.stack([im for _, im in rows_images])  # (n, C, H, W)
        out[[r for r, _ in rows_images]] = to_spec(batch, spec)
    return out


def child(loader: str, folder: Path, warm: Path, channels: int, size: int) -> None:
    from dfkd.sources import TargetSpec, load_source

    spec = TargetSpec(channels, size)

    def load(root: Path) -> np.ndarray:
        if loader == "pre-fix":
            return hold_all(root, spec)
        return load_source(
            {"kind": "imagefolder", "root": str(root), "labels": "none"}, spec
        ).images

    load(warm)  # imports torch's kernels and PIL's plugins
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    start = vm("VmRSS")
    started = time.perf_counter()
    images = load(folder)
    wall = time.perf_counter() - started
    print(
        json.dumps(
            {
                "n": len(images),
                "start": start,
                "peak": vm("VmHWM"),
                "wall": wall,
                "output": images.nbytes,
            }
        )
    )


# ---------------------------------------------------------------------------- parent
def measure(loader: str, folder: Path, warm: Path, channels: int, size: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        loader,
        str(folder),
        str(warm),
        str(channels),
        str(size),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{loader} on {folder} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 and 12 photos instead of 10 and 30")
    parser.add_argument(
        "--formats",
        nargs="+",
        default=["jpg", "png"],
        choices=("jpg", "png"),
        help="photo formats to write (default: both)",
    )
    parser.add_argument("--size", type=int, default=32, help="target side in pixels (default 32)")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3), help="target channels")
    parser.add_argument(
        "--prefix-max",
        type=int,
        default=10,
        help="largest folder the pre-fix loader is run on (it holds every photo; "
        "default 10, ~1.4 GB)",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        loader, folder, warm, channels, size = args.child
        child(loader, Path(folder), Path(warm), int(channels), int(size))
        return
    counts = (4, 12) if args.quick else (10, 30)
    width, height = 4000, 3000
    print(
        f"imagefolder peak memory: {width} x {height} photos (12 MP) -> "
        f"{args.channels} x {args.size} x {args.size}, 1 thread, one process per row"
    )
    print(
        f"{'format':6} {'photos':>6} {'loader':8} {'peak over start MiB':>20} "
        f"{'in photos':>9} {'abs peak MiB':>12} {'wall s':>7}  bound (output + 3 photos)"
    )
    print("-" * 104)
    with tempfile.TemporaryDirectory(prefix="dfkd-bench-imagefolder-") as tmp:
        tmp = Path(tmp)
        from PIL import Image

        (tmp / "warm").mkdir()
        Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp / "warm" / "a.png")
        for fmt in args.formats:
            for count in counts:
                folder = tmp / f"{fmt}{count}"
                photo = write_photos(folder, fmt, count, width, height)
                loaders = ["dfkd"] + (["pre-fix"] if count <= args.prefix_max else [])
                for loader in loaders:
                    r = measure(loader, folder, tmp / "warm", args.channels, args.size)
                    over = r["peak"] - r["start"]
                    bound = r["output"] + 3 * photo
                    verdict = ("met" if over <= bound else "NOT met") if loader == "dfkd" else ""
                    print(
                        f"{fmt:6} {r['n']:6d} {loader:8} {over / MIB:20.0f} "
                        f"{over / photo:9.2f} {r['peak'] / MIB:12.0f} {r['wall']:7.1f}  "
                        f"{bound / MIB:.0f} MiB {verdict}"
                    )
                shutil.rmtree(folder)


if __name__ == "__main__":
    main()
