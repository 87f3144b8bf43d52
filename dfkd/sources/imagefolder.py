"""Source kind `imagefolder`: any folder tree of image files (TinyImageNet, CLEVR, Mid-Air...).

Labels come from the first-level subfolders: the label of `root/<class>/**/<image>` is the
index of `<class>` among the sorted class folders (so TinyImageNet's
`train/<wnid>/images/*.JPEG` works as is). A flat folder has no labels.

Images are decoded with PIL one at a time, and each is made small before the next is opened:
16-bit images are rescaled to 8 bits by their bit depth; JPEGs decode at 1/2 to 1/8 scale
(`Image.draft`) while both sides keep at least `_GAP` times the target's side; a large image is
cut to its centre square (`fit: crop`) and resized to the spec there. Small images (under
2 x `_GAP` x the target's side) are only cropped, and resized in batches of equal size by
`convert.to_spec`, exactly as a whole batch would be. Peak memory is the output, plus one
full-size source image and its crop, plus `_PENDING_BYTES`, whatever the photos' size or number.

Folders are walked with symlinks followed, but never twice: a link to a folder already read (a
loop such as `a/loop -> ..`, or a second route to one folder) is skipped, and a file reached by
several paths is kept once, under its own path rather than a link's. Both are logged and
counted in `SourceData.skipped` (the prepared file's `skipped` attribute), beside the
unreadable files skipped with `on_error: skip`.

When the source is a target's own dataset, the caller's split picks the subfolder
`root/<splits[split]>` (default `root/train`, `root/test`); a transfer source reads `root`.

Over 400 lines because photo folders of any size and any content (formats, bit depths, links,
loops, unreadable files) must be read in bounded memory; each case is a short function here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfkd.errors import DfkdError
from dfkd.sources.base import SEED_PROPERTY, SourceData, SourceKind, TargetSpec, count_property
from dfkd.sources.convert import to_spec

log = logging.getLogger(__name__)

_BATCH = 2048  # small decoded images held before conversion to the spec
_PENDING_BYTES = 32 << 20  # ... and at most this many bytes of them
_GAP = 3  # JPEGs decode at reduced scale only while they keep >= _GAP x the target's side

PROPERTIES = {
    "root": {"type": "string", "description": "Folder of images (class subfolders give labels)."},
    "labels": {
        "type": "string",
        "enum": ["auto", "folders", "none"],
        "default": "auto",
        "description": (
            "folders: label = index of the sorted first-level subfolder; none: no labels; "
            "auto: folders when every image lies in a subfolder, else none."
        ),
    },
    "extensions": {
        "type": "array",
        "items": {"type": "string", "pattern": "^\\.[A-Za-z0-9]+$"},
        "minItems": 1,
        "default": [
            ".png",
            ".jpg",
            ".jpeg",
            ".bmp",
            ".gif",
            ".tif",
            ".tiff",
            ".webp",
            ".ppm",
            ".pgm",
        ],
        "description": "File extensions read (case-insensitive).",
    },
    "on_error": {
        "type": "string",
        "enum": ["skip", "error"],
        "default": "error",
        "description": "What to do with a file that cannot be decoded: skip it (counted and logged) or stop.",
    },
    "fit": {
        "type": "string",
        "enum": ["crop", "stretch"],
        "default": "crop",
        "description": "Non-square images: centre-crop to a square, or stretch, before resizing.",
    },
    "splits": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "train": {
                "type": "string",
                "default": "train",
                "description": "Subfolder of the train split.",
            },
            "test": {
                "type": "string",
                "default": "test",
                "description": "Subfolder of the test split.",
            },
        },
        "default": {},
        "description": "Subfolders of root read when this is a target's own dataset.",
    },
    "count": count_property(None),
    "seed": SEED_PROPERTY,
}


# ---------------------------------------------------------------------------- listing
def _root(args: dict, split: str | None) -> Path:
    root = Path(args["root"])
    if split is not None:
        root = root / args["splits"].get(split, split)
    return root


@dataclass
class Listing:
    """Image files under a root, and what the walk left out."""

    files: list[Path]
    linked_dirs: list[tuple[Path, str]] = field(default_factory=list)  # (link, folder read before)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)  # (path, the one kept)

    @property
    def skipped(self) -> int:
        return len(self.linked_dirs) + len(self.duplicates)

    def describe(self) -> str:
        parts = []
        if self.linked_dirs:
            link, real = self.linked_dirs[0]
            parts.append(
                f"{len(self.linked_dirs)} link(s) to folders already read (e.g. {link} -> {real})"
            )
        if self.duplicates:
            path, kept = self.duplicates[0]
            parts.append(
                f"{len(self.duplicates)} file(s) reached by a second path (e.g. {path}, "
                f"the same file as {kept})"
            )
        return " and ".join(parts)


def scan_images(root: Path, extensions: list[str]) -> Listing:
    """Image files under `root`, recursively, sorted, hidden files and folders skipped.

    Symlinks are followed, but each real folder is read once and each real file listed once.
    Plain folders are read before any linked one, so that a file keeps its own path (and its
    own class folder) rather than the path of a link to it.
    """
    if not root.is_dir():
        raise DfkdError(f"Image folder {root} does not exist (or is not a folder). Check `root`.")
    wanted = {e.lower() for e in extensions}
    seen = {os.path.realpath(root)}  # real paths of the folders read
    links: list[Path] = []  # folder links found, read after the plain tree
    found: list[tuple[bool, Path, str]] = []  # (reached through a link, path, real path)
    listing = Listing([])

    def read(top: Path, top_real: str, linked: bool) -> None:
        stack = deque([(top, top_real)])
        while stack:
            folder, real = stack.popleft()
            for entry in _entries(folder):
                path, entry_real = folder / entry.name, os.path.join(real, entry.name)
                if _is_dir(entry):
                    if entry.is_symlink():
                        links.append(path)
                    elif entry_real in seen:  # a real subfolder of a linked folder read before
                        listing.linked_dirs.append((path, entry_real))
                    else:
                        seen.add(entry_real)
                        stack.append((path, entry_real))
                elif os.path.splitext(entry.name)[1].lower() in wanted:
                    if entry.is_symlink():
                        found.append((True, path, os.path.realpath(path)))
                    else:
                        found.append((linked, path, entry_real))

    read(root, os.path.realpath(root), linked=False)
    while links:
        links.sort()
        link = links.pop(0)
        real = os.path.realpath(link)
        if real in seen:
            listing.linked_dirs.append((link, real))
        else:
            seen.add(real)
            read(link, real, linked=True)
    kept: dict[str, Path] = {}
    for _, path, real in sorted(found):  # own paths first, then in path order
        if real in kept:
            listing.duplicates.append((path, kept[real]))
        else:
            kept[real] = path
    listing.files = sorted(kept.values())
    return listing


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise DfkdError(
            f"Cannot read folder {folder} ({exc.strerror or exc}). Make it readable, or move it "
            "out of `root`."
        ) from exc


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links; a broken or looping link is listed as a file
    except OSError:
        return False


def list_images(root: Path, extensions: list[str]) -> list[Path]:
    """The files of `scan_images` (each real file once)."""
    return scan_images(root, extensions).files


def folder_labels(
    root: Path, files: list[Path], mode: str
) -> tuple[np.ndarray | None, list[str] | None]:
    """Labels from first-level subfolders (see module docstring), or (None, None)."""
    if mode == "none":
        return None, None
    top = [f.relative_to(root).parts for f in files]
    flat = [f for f, parts in zip(files, top) if len(parts) == 1]
    if flat:
        if mode == "folders":
            raise DfkdError(
                f"{root} holds images outside class subfolders (e.g. {flat[0]}), but labels: folders "
                "needs every image in root/<class>/. Move them, or set labels: none."
            )
        return None, None
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    used = {parts[0] for parts in top}
    empty = [c for c in classes if c not in used]
    if empty:
        raise DfkdError(
            f"Class folders {empty[:5]} under {root} hold no images, which would shift the labels of "
            "the other classes. Remove them, or set labels: none."
        )
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[parts[0]] for parts in top], np.int64), classes


def listing_digest(root: Path, files: list[Path]) -> str:
    """sha256 of the sorted (relative path, size, mtime_ns) listing: cheap change detection."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(
            f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


# ---------------------------------------------------------------------------- decoding
def _decode(path: Path, spec: TargetSpec, crop: bool) -> np.ndarray:
    """(C, h, w) uint8 of one file, cropped (`crop`) and shrunk towards the spec (module doc).

    Raises OSError/ValueError style errors when the file is unreadable.
    """
    from PIL import Image

    floor = _GAP * spec.image_size  # JPEG draft: DCT scaling keeps both sides >= floor
    with Image.open(path) as image:
        full_size = image.size
        drafted = image.draft(image.mode, (floor, floor))
        scale = 1.0 if drafted is None else full_size[0] / drafted[1][2]  # 1, 2, 4 or 8
        image.load()
        image = _to_8bit(image)
        if image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, image)
        grey = spec.channels == 1 and image.mode in ("L", "1", "F")
        if image.mode != ("L" if grey else "RGB"):  # convert copies even to the same mode
            image = image.convert("L" if grey else "RGB")
        image = _shrink(image, full_size, scale, spec.image_size, crop)
        array = np.asarray(image, np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _to_8bit(image):
    """Integer grey images (modes I;16*, I) as mode L, scaled by their bit depth, not clipped.

    16-bit values v become round(v * 255 / 65535) = round(v / 257). Mode I (32-bit ints) holds
    8-bit values when none exceeds 255 and the file does not say 16 bits, 16-bit values up to
    65535, else 32-bit ones.
    """
    from PIL import Image

    if not (image.mode == "I" or image.mode.startswith("I;16")):
        return image
    values = np.asarray(image)  # (H, W) uint16 or int32
    high = int(values.max()) if values.size else 0
    tiff_bits = getattr(image, "tag_v2", {}).get(258, (None,))  # TIFF BitsPerSample
    if image.mode.startswith("I;16") or (high <= 65535 and (high > 255 or 16 in tiff_bits)):
        bits = 16
    elif high > 65535:
        bits = 32
    else:
        bits = 8
    peak = (1 << bits) - 1
    out = np.empty(values.shape, np.uint8)
    step = max(1, (1 << 20) // max(1, values.shape[1]))  # rows per block: bounded temporaries
    for start in range(0, len(values), step):
        block = np.clip(values[start : start + step], 0, None).astype(np.uint64)
        out[start : start + step] = (block * 255 + peak // 2) // peak  # round half up, exact
    return Image.fromarray(out, "L")


def _shrink(image, full_size: tuple[int, int], scale: float, size: int, crop: bool):
    """The image cut to its centre square (`crop`), resized to `size` unless it is small.

    An image whose (square) box keeps under 2 x `_GAP` x `size` pixels a side and that was not
    drafted is only cropped, so that `to_spec` resizes it exactly as before this existed. A
    larger one is resized here, by PIL's antialiased bilinear filter (the one torch's
    `antialias=True` copies), from the box `convert.center_crop_square` cuts from the
    full-size image: on a JPEG decoded at 1/`scale` that box falls between pixels, and PIL
    takes it at sub-pixel precision.
    """
    from PIL import Image

    width, height = full_size
    box = (0, 0, width, height)
    if crop:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    small = max(box[2] - box[0], box[3] - box[1]) < 2 * _GAP * size
    if scale == 1 and small:
        return image.crop(box) if box != (0, 0, width, height) else image
    # PIL's filter reads pixels beyond a `box`; torch's stops at the crop's edge: crop first
    left, top, right, bottom = (v / scale for v in box)
    outer = (
        int(left),
        int(top),
        min(math.ceil(right), image.width),
        min(math.ceil(bottom), image.height),
    )
    inner = (left - outer[0], top - outer[1], right - outer[0], bottom - outer[1])
    return image.crop(outer).resize((size, size), Image.Resampling.BILINEAR, box=inner)


def _decode_all(
    files: list[Path], order: np.ndarray, want: int, spec: TargetSpec, on_error: str, crop: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode files in `order` until `want` decode; return images, their file indices, skips."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((want, spec.channels, spec.image_size, spec.image_size), np.uint8)
    taken: list[int] = []
    pending: dict[tuple, list[tuple[int, np.ndarray]]] = {}  # shape -> [(row, image)]
    n_pending = pending_bytes = skipped = 0

    def flush() -> None:
        nonlocal n_pending, pending_bytes
        for rows_images in pending.values():
            rows = [r for r, _ in rows_images]
            batch = np.stack([im for _, im in rows_images])  # (n, C, h, w)
            out[rows] = to_spec(batch, spec, crop=crop)
        pending.clear()
        n_pending = pending_bytes = 0

    for index in order:
        if len(taken) == want:
            break
        path = files[index]
        try:
            image = _decode(path, spec, crop)
        except (
            OSError,
            ValueError,
            SyntaxError,
            UnidentifiedImageError,
            Image.DecompressionBombError,
        ) as exc:
            if on_error == "error":
                raise DfkdError(
                    f"{path} cannot be decoded as an image ({type(exc).__name__}: {exc}). "
                    "Delete or replace it, or set on_error: skip to leave unreadable files out."
                ) from exc
            skipped += 1
            log.warning("skipping unreadable image %s (%s)", path, exc)
            continue
        pending.setdefault(image.shape, []).append((len(taken), image))
        taken.append(int(index))
        n_pending += 1
        pending_bytes += image.nbytes
        if n_pending >= _BATCH or pending_bytes >= _PENDING_BYTES:
            flush()
    flush()
    return out[: len(taken)], np.asarray(taken, np.int64), skipped


# ---------------------------------------------------------------------------- kind functions
def input_files(args: dict, split: str | None) -> list[Path]:
    root = _root(args, split)
    return list_images(root, args["extensions"]) if root.is_dir() else []


def load(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    root = _root(args, split)
    listing = scan_images(root, args["extensions"])
    files = listing.files
    if listing.skipped:
        log.warning("%s: skipped %s", root, listing.describe())
    if not files:
        raise DfkdError(
            f"No images with extensions {args['extensions']} under {root}. Check `root` and `extensions`."
        )
    labels, class_names = folder_labels(root, files, args["labels"])
    count = args["count"] if args["count"] is not None else len(files)
    if count > len(files):
        raise DfkdError(f"{root} has {len(files)} images but count: {count} asks for more.")
    if args["count"] is None:
        order = np.arange(len(files))
    else:  # decode in a seeded random order until `count` succeed, then restore file order
        order = np.random.default_rng(args["seed"]).permutation(len(files))
    images, taken, skipped = _decode_all(
        files, order, count, spec, args["on_error"], crop=args["fit"] == "crop"
    )
    if skipped:
        log.warning("%s: skipped %d unreadable image file(s) of %d", root, skipped, len(files))
    if len(taken) == 0:
        raise DfkdError(f"{root}: none of the {len(files)} image files could be decoded.")
    if args["count"] is not None and len(taken) < count:
        raise DfkdError(
            f"{root}: only {len(taken)} of {len(files)} files decode ({skipped} skipped), fewer than "
            f"count: {count}. Lower count or fix the files."
        )
    sort = np.argsort(taken, kind="stable")
    images, taken = images[sort], taken[sort]
    return SourceData(
        images=np.ascontiguousarray(images),
        labels=None if labels is None else np.ascontiguousarray(labels[taken]),
        class_names=class_names,
        skipped=skipped + listing.skipped,
    )


KIND = SourceKind(
    name="imagefolder",
    description="A folder tree of image files; first-level subfolders are classes.",
    properties=PROPERTIES,
    required=("root",),
    load=load,
    input_files=input_files,
)
