"""Load and validate the experiment config.

The schema (`dfkd/schemas/config.schema.yaml`, read through `dfkd.schema`) holds every key, its
description and its default. `validate_config` checks it, fills defaults, then checks what a
schema cannot: names that must refer to each other, each source kind's own arguments, and the
cross-field rules of `dfkd.config_checks`. What each stage reads of the validated config is
`dfkd.slices`'.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

from dfkd.config_checks import cross_field_errors, data_errors
from dfkd.errors import DfkdError
from dfkd.io.layout import DEFAULT_VARIANT
from dfkd.schema import load_schema, schema_errors
from dfkd.slices import TARGET_SPLITS, merge_variant
from dfkd.sources import source_arg_schema
from dfkd.io.yaml_io import load_yaml, merge_config


def validate_config(config: Mapping[str, Any], source_file: str = "config", *, check_data: bool = False) -> dict:
    """Return a validated copy of `config` with defaults filled; raise DfkdError listing every problem.

    `check_data` also looks on disk for the data of the targets the workflow builds
    (`dfkd.config_checks.data_errors`; `dfkd validate` and the Snakefile turn it on).
    """
    if not isinstance(config, Mapping):
        raise DfkdError(f"{source_file}: the config must be a mapping of keys, not {type(config).__name__}.")
    config = copy.deepcopy(dict(config))
    problems = schema_errors(config, load_schema())
    if not problems:
        problems = _semantic_errors(config)
    if not problems and check_data:
        problems = data_errors(config)
    if problems:
        listing = "\n  - ".join(problems)
        raise DfkdError(f"{source_file} is invalid:\n  - {listing}\nFix these keys (see dfkd/schemas/config.schema.yaml for every key and its meaning).")
    return config


def _semantic_errors(config: dict) -> list[str]:
    problems = []
    for name in config["run_targets"]:
        if name not in config["targets"]:
            problems.append(f"run_targets: '{name}' is not defined under targets (defined: {sorted(config['targets'])})")
    known_sources = set(config["sources"]) | set(TARGET_SPLITS)
    for set_name, recipe in config["transfer_sets"].items():
        for source in recipe["sources"]:
            if source not in known_sources:
                problems.append(f"transfer_sets.{set_name}.sources: '{source}' is not a defined source (defined: {sorted(known_sources)})")
        if len(set(recipe["sources"])) != len(recipe["sources"]):
            problems.append(f"transfer_sets.{set_name}.sources: a source is listed twice: {recipe['sources']}")
    for name, target in config["targets"].items():
        for set_name in target.get("sets", []):
            if set_name not in config["transfer_sets"]:
                problems.append(f"targets.{name}.sets: '{set_name}' is not a defined transfer set (defined: {sorted(config['transfer_sets'])})")
    problems.extend(_study_errors(config))
    for variant, overrides in config["variants"].items():
        for name, target in config["targets"].items():
            problems.extend(merge_variant(target["student"], overrides, f"variants.{variant} (on targets.{name}.student)")[1])
    blocks = {f"sources.{name}": block for name, block in config["sources"].items()}
    blocks.update({f"targets.{name}.dataset": t["dataset"] for name, t in config["targets"].items() if "dataset" in t})
    for where, block in blocks.items():
        try:
            schema = source_arg_schema(block["kind"])
        except DfkdError as exc:
            problems.append(f"{where}.kind: {exc}")
            continue
        problems.extend(schema_errors(block, schema, where))
    for name, target in config["targets"].items():
        for key in ("mean", "std"):
            if len(target[key]) not in (1, target["channels"]):
                problems.append(f"targets.{name}.{key}: needs 1 or {target['channels']} values, got {target[key]}")
    if not problems:  # cross-field checks read the sources' own arguments: only once those are valid
        problems.extend(cross_field_errors(config))
    return problems


def _study_errors(config: dict) -> list[str]:
    study, problems = config["study"], []
    for name in study["targets"]:
        if name not in config["targets"]:
            problems.append(f"study.targets: '{name}' is not defined under targets (defined: {sorted(config['targets'])})")
    known_variants = {DEFAULT_VARIANT, *config["variants"]}
    for table, spec in study["tables"].items():
        for row, set_name in spec["rows"].items():
            if set_name not in config["transfer_sets"]:
                problems.append(f"study.tables.{table}.rows.{row}: '{set_name}' is not a defined transfer set (defined: {sorted(config['transfer_sets'])})")
        for variant in spec["variants"]:
            if variant not in known_variants:
                problems.append(f"study.tables.{table}.variants: '{variant}' is not defined under variants (defined: {sorted(known_variants)})")
    if study["tables"] and not study["targets"]:
        problems.append("study.targets: the study declares tables but no target to build them for")
    return problems


def load_config(*paths: str | Path, check_data: bool = False) -> dict:
    """Read, merge (later files update earlier ones, as Snakemake merges `--configfile`) and validate."""
    if not paths:
        raise DfkdError("load_config: give at least one config file")
    merged: dict = {}
    for path in paths:
        raw = load_yaml(path)
        if raw is None:
            continue
        if not isinstance(raw, Mapping):
            raise DfkdError(f"{path}: the config must be a mapping of keys, not {type(raw).__name__}.")
        merge_config(merged, raw)
    return validate_config(merged, " + ".join(map(str, paths)), check_data=check_data)


# ---------------------------------------------------------------------------- stage slices


