"""Source kind `imagefolder`: any folder tree of image files (TinyImageNet, CLEVR, Mid-Air...).

Labels come from the first-level subfolders: the label of `root/<class>/**/<image>` is the
index of `<class>` among the sorted class folders (so TinyImageNet's
`train/<wnid>/images/*.JPEG` works as is). A flat folder has no labels. Images are decoded
with PIL, converted to grey or RGB, centre-cropped to a square (or stretched: `fit`) and
resized to the target's spec in batches of equal size.

When the source is a target's own dataset, the caller's split picks the subfolder
`root/<splits[split]>` (default `root/train`, `root/test`); a transfer source reads `root`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from dfkd.errors import DfkdError
from dfkd.sources.base import SEED_PROPERTY, SourceData, SourceKind, TargetSpec, count_property
from dfkd.sources.convert import to_spec

log = logging.getLogger(__name__)

_BATCH = 2048  # decoded images held before conversion to the spec

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


def list_images(root: Path, extensions: list[str]) -> list[Path]:
    """Image files under `root`, recursively, sorted, hidden files and folders skipped."""
    if not root.is_dir():
        raise DfkdError(f"Image folder {root} does not exist (or is not a folder). Check `root`.")
    wanted = {e.lower() for e in extensions}
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in wanted:
                found.append(Path(folder) / name)
    return sorted(found)


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
def _decode(path: Path, channels: int) -> np.ndarray:
    """(C, H, W) uint8 of one file; raises OSError/ValueError style errors when unreadable."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (0, 0, 0, 255))
            image = Image.alpha_composite(background, image)
        if channels == 3 or image.mode not in ("L", "1", "I", "I;16", "F"):
            image = image.convert("RGB")
        else:
            image = image.convert("L")
        array = np.asarray(image, np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _decode_all(
    files: list[Path], order: np.ndarray, want: int, spec: TargetSpec, on_error: str, crop: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode files in `order` until `want` decode; return images, their file indices, skips."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((want, spec.channels, spec.image_size, spec.image_size), np.uint8)
    taken: list[int] = []
    pending: dict[tuple, list[tuple[int, np.ndarray]]] = {}  # shape -> [(row, image)]
    n_pending = skipped = 0

    def flush() -> None:
        nonlocal n_pending
        for rows_images in pending.values():
            rows = [r for r, _ in rows_images]
            batch = np.stack([im for _, im in rows_images])  # (n, C, H, W)
            out[rows] = to_spec(batch, spec, crop=crop)
        pending.clear()
        n_pending = 0

    for index in order:
        if len(taken) == want:
            break
        path = files[index]
        try:
            image = _decode(path, spec.channels)
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
        if n_pending >= _BATCH:
            flush()
    flush()
    return out[: len(taken)], np.asarray(taken, np.int64), skipped


# ---------------------------------------------------------------------------- kind functions
def input_files(args: dict, split: str | None) -> list[Path]:
    root = _root(args, split)
    return list_images(root, args["extensions"]) if root.is_dir() else []


def load(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    root = _root(args, split)
    files = list_images(root, args["extensions"])
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
        skipped=skipped,
    )


KIND = SourceKind(
    name="imagefolder",
    description="A folder tree of image files; first-level subfolders are classes.",
    properties=PROPERTIES,
    required=("root",),
    load=load,
    input_files=input_files,
)
