"""The source registry: what a source kind is, its argument schema, and the types it returns.

A source block in the config is `{"kind": <key>, **arguments}`. Each kind declares the JSON
schema of its arguments (every key with a description, optional keys with a default), so that
a typo in a source block is rejected with the key named and the allowed keys listed.

Kinds are registered explicitly in `dfkd/sources/__init__.py` (no registration by import side
effect): that file is the one place that lists them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from dfkd.errors import DfkdError

JSON_SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"


@dataclass(frozen=True)
class TargetSpec:
    """The input spec of a target network: every source is converted to it."""

    channels: int  # 1 (grayscale) or 3 (RGB)
    image_size: int  # height == width

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise DfkdError(f"TargetSpec.channels is {self.channels}; it must be 1 or 3.")
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise DfkdError(
                f"TargetSpec.image_size is {self.image_size!r}; it must be an int >= 1."
            )


@dataclass
class SourceData:
    """Images of one source at a target's spec."""

    images: np.ndarray  # uint8 (N, C, H, W), C/H/W from the TargetSpec
    labels: np.ndarray | None  # int64 (N,) ground truth where the source has it
    class_names: list[str] | None = None
    skipped: int = 0  # unreadable files skipped (imagefolder with on_error: skip)


LoadFn = Callable[[dict, TargetSpec, "str | None"], SourceData]
InputFilesFn = Callable[[dict, "str | None"], "list[Path]"]


def _no_input_files(args: dict, split: str | None) -> list[Path]:
    return []


@dataclass(frozen=True)
class SourceKind:
    """One loader: its key, its arguments' JSON schema and its functions.

    `load(args, spec, split)` gets the validated arguments (defaults filled). `split` is None
    for transfer sources (the block's own `split`, if the kind has one, applies) and
    "train"/"test" when the source is a target's own dataset (it then overrides the block).
    """

    name: str
    description: str
    properties: Mapping[str, dict]
    load: LoadFn
    required: tuple[str, ...] = ()
    input_files: InputFilesFn = _no_input_files
    generator: bool = False  # made from a seed: any `count` can be asked for

    def schema(self) -> dict:
        """The full draft-07 JSON schema of a source block of this kind."""
        return {
            "$schema": JSON_SCHEMA_DRAFT,
            "title": f"source kind '{self.name}'",
            "description": self.description,
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", *self.required],
            "properties": {
                "kind": {"const": self.name, "description": "Loader key in dfkd.sources."},
                **copy.deepcopy(dict(self.properties)),
            },
        }


SOURCE_KINDS: dict[str, SourceKind] = {}


def register_source_kind(kind: SourceKind) -> SourceKind:
    """Add a kind to the registry (called only from dfkd/sources/__init__.py)."""
    if kind.name in SOURCE_KINDS and SOURCE_KINDS[kind.name] is not kind:
        raise ValueError(f"source kind '{kind.name}' is registered twice")
    for key, prop in kind.properties.items():
        assert "description" in prop, f"source kind {kind.name}: key '{key}' lacks a description"
        assert (
            key in kind.required or "default" in prop
        ), f"source kind {kind.name}: optional key '{key}' lacks a default"
    SOURCE_KINDS[kind.name] = kind
    return kind


def get_source_kind(kind: str) -> SourceKind:
    try:
        return SOURCE_KINDS[kind]
    except (KeyError, TypeError):
        raise DfkdError(
            f"Unknown source kind {kind!r}. Known kinds: {', '.join(sorted(SOURCE_KINDS))}."
        ) from None


# ---------------------------------------------------------------------------- validation
def _default_filling_validator():
    from jsonschema import Draft7Validator, validators

    validate_properties = Draft7Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft7Validator, {"properties": set_defaults})


def validate_source_config(cfg: Mapping[str, Any]) -> tuple[SourceKind, dict]:
    """Check a source block against its kind's schema; return the kind and a filled copy."""
    if not isinstance(cfg, Mapping):
        raise DfkdError(f"A source block must be a mapping with a 'kind' key; got {cfg!r}.")
    if "kind" not in cfg:
        raise DfkdError(
            f"Source block {dict(cfg)} has no 'kind'. Known kinds: {', '.join(sorted(SOURCE_KINDS))}."
        )
    kind = get_source_kind(cfg["kind"])
    allowed = ", ".join(["kind", *kind.properties])
    unknown = sorted(set(cfg) - {"kind", *kind.properties})
    if unknown:
        raise DfkdError(
            f"Source block of kind '{kind.name}' has unknown key(s) {', '.join(map(repr, unknown))}. "
            f"Allowed keys: {allowed}."
        )
    args = copy.deepcopy(dict(cfg))
    validator = _default_filling_validator()(kind.schema())
    errors = sorted(validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        error = errors[0]
        path = list(error.absolute_path)
        key = path[0] if path else None
        if key is not None:
            value = cfg.get(key, args.get(key))
            hint = kind.properties.get(key, {}).get("description", "")
            where = "/".join(map(str, path))
            raise DfkdError(
                f"Source block of kind '{kind.name}': key '{where}' = {json.dumps(value, default=str)} "
                f"is invalid ({error.message}). '{key}': {hint} Allowed keys: {allowed}."
            )
        raise DfkdError(
            f"Source block of kind '{kind.name}' is invalid ({error.message}). Allowed keys: {allowed}."
        )
    return kind, args


# ---------------------------------------------------------------------------- shared helpers
def subset_indices(n: int, count: int | None, seed: int, what: str) -> np.ndarray | None:
    """Sorted indices of a seeded random subset of `count` of `n` items; None keeps all."""
    if count is None or count == n:
        return None
    if count > n:
        raise DfkdError(
            f"{what} has {n} images but count: {count} asks for more. Lower count or remove it."
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=count, replace=False))


def count_property(default: int | None, what: str = "images") -> dict:
    if default is None:
        return {
            "type": ["integer", "null"],
            "minimum": 1,
            "default": None,
            "description": f"Take a seeded random subset of this many {what} (null: all).",
        }
    return {
        "type": "integer",
        "minimum": 1,
        "maximum": 10_000_000,
        "default": default,
        "description": f"Number of {what} to make.",
    }


def package_dirs(package: str) -> list[Path]:
    """Folders of an installed package, found without importing it (importing is slow)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


SEED_PROPERTY = {
    "type": "integer",
    "minimum": 0,
    "default": 0,
    "description": "Seed of the random choices (subset, generation).",
}


GENERATOR_CHUNK = 1024  # images per seeded chunk; part of the generators' determinism contract


def generate_in_chunks(
    count: int, seed: int, make: Callable[[np.random.Generator, int, int], np.ndarray]
) -> np.ndarray:
    """Concatenate `make(rng, GENERATOR_CHUNK, keep)` over chunks seeded by (seed, chunk index).

    `make` draws the random parameters of a whole chunk and returns only the first `keep`
    images, so that the first n images of a larger count are the same n images (a generator
    can be asked for more without changing the ones it already made).
    """
    out = None
    for index, start in enumerate(range(0, count, GENERATOR_CHUNK)):
        rng = np.random.default_rng([seed, index])
        keep = min(GENERATOR_CHUNK, count - start)
        part = make(rng, GENERATOR_CHUNK, keep)
        assert len(part) == keep, f"generator made {len(part)} images, expected {keep}"
        if out is None:
            out = np.empty((count,) + part.shape[1:], part.dtype)
        out[start : start + keep] = part
    assert out is not None, f"count must be >= 1, got {count}"
    return out
