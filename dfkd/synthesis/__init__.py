"""Synthesis from the teacher: a registry of class-conditional synthesisers.

Each entry makes images for given classes from the teacher, in batches (see `base` for the
batch interface), with its own settings (a JSON-schema `properties` dict, every key with a
description and a default). The source kinds of the same names (`dfkd.sources.synthesized`)
and `fill` generators of these kinds are made by the `synthesize` stage (`driver`, `stage`).
This file is the one place that lists them (explicit, no registration by import side effect).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from dfkd.errors import DfkdError
from dfkd.synthesis import impressions, inversion


@dataclass(frozen=True)
class Synthesizer:
    name: str
    synthesize_batch: Callable[..., Any]
    properties: Mapping[str, dict]  # its settings' JSON schema (keys of the source block)


SYNTHESIZERS: dict[str, Synthesizer] = {
    "impressions": Synthesizer("impressions", impressions.synthesize_batch, impressions.PROPERTIES),
    "inversion": Synthesizer("inversion", inversion.synthesize_batch, inversion.PROPERTIES),
}


def get_synthesizer(name: str) -> Synthesizer:
    try:
        return SYNTHESIZERS[name]
    except (KeyError, TypeError):
        raise DfkdError(f"unknown synthesiser {name!r}; known: {', '.join(sorted(SYNTHESIZERS))}.") from None
