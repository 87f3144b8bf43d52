"""Source kind `fill`: a generator asked for batch after batch until every class is full.

Only its arguments live here (so that the config's source blocks are checked like any
other kind's). A fill source needs the target's teacher, so it is made by the `fill` stage
(`dfkd/stages/fill.py`, `dfkd fill`, rule `fill`), never by `prepare`: `load` says so.
"""

from __future__ import annotations

from typing import Mapping

from dfkd.errors import DfkdError
from dfkd.sources.base import SEED_PROPERTY, SourceData, SourceKind, TargetSpec
from dfkd.synthesis import SYNTHESIZERS

BLIND_KINDS = ("noise", "shapes", "strokes", "patches")  # drawn until the classes fill
# class-conditional: asked for exactly the rows the set's earlier sources leave short (per set and seed)
GENERATOR_KINDS = (*BLIND_KINDS, *SYNTHESIZERS)

PROPERTIES = {
    "generator": {
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": list(GENERATOR_KINDS)}},
        "description": (
            "The generator: a source block of kind noise, shapes, strokes or patches, without "
            "count or seed (the budget and this block's seed decide them); or of a synthesiser "
            "(impressions, inversion), which makes, per transfer set and seed, only the rows its earlier "
            "sources leave short."
        ),
    },
    "per_class": {
        "type": ["integer", "null"],
        "minimum": 1,
        "default": None,
        "description": "Rows to keep per teacher class (null: the target's per_class).",
    },
    "budget": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "images": {
                "type": ["integer", "null"],
                "minimum": 1,
                "default": 1_000_000,
                "description": "Most images to draw (null: no limit).",
            },
            "seconds": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "default": None,
                "description": "Most seconds of drawing and labelling (null: no limit; a time limit makes where it stops machine-dependent).",
            },
        },
        "default": {"images": 1_000_000, "seconds": None},
        "description": "When to stop if some class is still short: images drawn, seconds spent, or both (the first reached).",
    },
    "batch": {
        "type": "integer",
        "minimum": 1,
        "maximum": 1_048_576,
        "default": 8192,
        "description": "Images drawn and labelled per batch (the bandit updates after each).",
    },
    "vary": {
        "type": ["object", "null"],
        "additionalProperties": {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 2,
            "maxItems": 2,
        },
        "default": None,
        "description": (
            "Generator arguments to vary, each as [low, high] split into `bins` bins that a seeded "
            "bandit samples by their yield of still-short classes (null: the kind's default, {}: none)."
        ),
    },
    "bins": {
        "type": "integer",
        "minimum": 1,
        "maximum": 64,
        "default": 4,
        "description": "Bins per varied argument.",
    },
    "explore": {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "default": 0.2,
        "description": "Share of the bandit's choices spread evenly over all bins.",
    },
    "seed": SEED_PROPERTY,
}


def load(args: dict, spec: TargetSpec, split: str | None) -> SourceData:
    raise DfkdError(
        "source kind 'fill' needs the target's teacher: it is made by `dfkd fill` (Snakemake "
        "rule `fill`), not by `prepare`."
    )


KIND = SourceKind(
    name="fill",
    description="Draws from a generator, labelled by the teacher, until every class holds per_class rows.",
    properties=PROPERTIES,
    load=load,
    required=("generator",),
)


FILL_ONLY_KEYS = ("batch", "vary", "bins", "explore")  # a blind fill's keys; a synthesiser's batch is its own


def is_conditional(block: Mapping) -> bool:
    """A fill whose generator is a synthesiser: made per transfer set and seed (dfkd synthesize)."""
    return block.get("kind") == "fill" and (block.get("generator") or {}).get("kind") in SYNTHESIZERS


def fill_default(key: str):
    """The schema default of a fill block's key (kind `fill`'s own schema)."""
    return PROPERTIES[key]["default"]
