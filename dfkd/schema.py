"""The config schema: where it lives, its defaults, and checking any part of a config against it.

`dfkd/schemas/config.schema.yaml` holds every key, its description and its default: the one
place defaults live. `schema_errors` checks an instance and fills defaults in place;
`schema_default` reads one default for commands that run without a config.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from dfkd.io.yaml_io import load_yaml

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=1)

def load_schema() -> dict:
    """The config schema (read once; callers must not modify it)."""
    return load_yaml(SCHEMA_PATH)


def schema_default(*keys: str) -> Any:
    """The schema's default of a config key, e.g. schema_default("study", "min_effect"): the one
    place defaults live, for commands that run without a config."""
    node = load_schema()
    for key in keys:
        node = node["properties"][key]
    return node["default"]


def definition_schema(name: str) -> dict:
    """A schema for one of the config schema's `$defs` (e.g. 'training')."""
    schema = load_schema()
    return {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}


def _validator_with_defaults(schema: Mapping) -> jsonschema.Validator:
    """A validator for the schema's draft that also fills `default` values (as snakemake's does)."""
    base = jsonschema.validators.validator_for(schema)

    def set_defaults(validator, properties, instance, schema_node):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema_node)

    extended = jsonschema.validators.extend(base, {"properties": set_defaults})
    return extended(schema)


def schema_errors(instance: Any, schema: Mapping, where: str = "") -> list[str]:
    """All schema violations as 'key.path: message' lines (defaults are filled in place)."""
    validator = _validator_with_defaults(schema)
    messages = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
        parts = ([where] if where else []) + [str(part) for part in error.absolute_path]
        messages.append(f"{'.'.join(parts) or '(top level)'}: {error.message}")
    return messages


def definition_defaults(name: str) -> dict[str, Any]:
    """The defaults of the keys of one of the schema's `$defs` (e.g. 'training', 'augment'), for code
    that fills a block given by hand: a key's own `default`, or, for an object whose default is
    empty, its properties' defaults. Keys without a default are left out."""
    defs = load_schema()["$defs"]
    return _defaults(defs[name], defs)


def _defaults(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, prop in node.get("properties", {}).items():
        if "$ref" in prop:
            prop = {**defs[prop["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in prop.items() if k != "$ref"}}
        if prop.get("default", {}) == {} and "properties" in prop:
            inner = _defaults(prop, defs)
            if inner:  # an object none of whose keys has a default (a teacher's `load`) has none
                out[key] = inner
        elif "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
    return out
