"""Source kinds made from the teacher: one per synthesiser of `dfkd.synthesis` (e.g. `impressions`).

Only their arguments live here, so that the config's source blocks are checked like any other
kind's: the common ones (count, classes, batch, budget, seed) and the synthesiser's own
settings. Such a source needs the target's teacher, so the `synthesize` stage makes it
(`dfkd synthesize`, rule `synthesize`), never `prepare`: `load` says so.
"""
from __future__ import annotations

from dfkd.errors import DfkdError
from dfkd.sources.base import SEED_PROPERTY, SourceData, SourceKind, TargetSpec
from dfkd.synthesis import SYNTHESIZERS

COMMON_PROPERTIES = {
    "count": {
        "type": "integer", "minimum": 1, "maximum": 10_000_000, "default": 10_000,
        "description": "Images to make, split equally over the classes (the lowest classes get the remainder).",
    },
    "classes": {
        "type": ["array", "null"], "items": {"type": "integer", "minimum": 0}, "minItems": 1, "uniqueItems": True,
        "default": None,
        "description": "The classes to make images for (null: every class of the target).",
    },
    "batch": {
        "type": "integer", "minimum": 1, "maximum": 65_536, "default": 256,
        "description": "Images optimised together on the device (memory, not the result, depends on it).",
    },
    "budget": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "seconds": {
                "type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
                "description": "Most seconds of synthesis (null: no limit; a limit makes where it stops machine-dependent).",
            },
        },
        "default": {"seconds": None},
        "description": "When to stop before `count` images are made.",
    },
    "seed": SEED_PROPERTY,
}
# keys of the block that the stage reads; the rest are the synthesiser's settings
COMMON_KEYS = tuple(COMMON_PROPERTIES)


def _load(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    raise DfkdError(
        f"source kind '{args['kind']}' is made from the target's teacher: by `dfkd synthesize` (Snakemake rule "
        "`synthesize`), not by `prepare`."
    )


def settings_of(block: dict) -> dict:
    """The synthesiser's own settings of a (filled) block: every key but kind and the common ones."""
    return {k: v for k, v in block.items() if k != "kind" and k not in COMMON_KEYS}


KINDS = tuple(
    SourceKind(
        name=name,
        description=f"Images synthesised from the target's teacher by '{name}' (dfkd.synthesis).",
        properties={**COMMON_PROPERTIES, **synthesizer.properties},
        load=_load,
    )
    for name, synthesizer in SYNTHESIZERS.items()
)
