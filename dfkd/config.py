"""Load and validate the experiment config, and slice it per stage.

The schema (`dfkd/schemas/config.schema.yaml`) holds every key, its description and its
default. `validate_config` checks it, fills defaults, then checks what a schema cannot:
names that must refer to each other, and each source kind's own arguments.

The `*_slice` functions return exactly the part of the config that one stage reads. The
Snakemake rules pass them as `params`, so that Snakemake re-runs a job exactly when its slice
changed (see README "What re-runs when you change what").
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from dfkd.errors import DfkdError
from dfkd.yaml_io import load_yaml, merge_config

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"
TARGET_SPLITS = ("train", "test")


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
        from dfkd.config_checks import data_errors

        problems = data_errors(config)
    if problems:
        listing = "\n  - ".join(problems)
        raise DfkdError(f"{source_file} is invalid:\n  - {listing}\nFix these keys (see dfkd/schemas/config.schema.yaml for every key and its meaning).")
    return config


def _semantic_errors(config: dict) -> list[str]:
    from dfkd.config_checks import cross_field_errors
    from dfkd.sources import source_arg_schema

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
def target_spec_slice(target: Mapping) -> dict:
    return {key: target[key] for key in ("channels", "image_size")}


def model_io_slice(target: Mapping) -> dict:
    return {key: target[key] for key in ("channels", "image_size", "num_classes", "mean", "std")}


def source_block(config: Mapping, target_name: str, source: str) -> dict:
    """The config block that loads `source` for `target_name` ('train'/'test' are the target's data)."""
    if source in TARGET_SPLITS:
        return dict(config["targets"][target_name]["dataset"])
    try:
        return dict(config["sources"][source])
    except KeyError:
        raise DfkdError(f"source '{source}' is not defined (defined: {sorted(config['sources'])})") from None


def prepare_slice(config: Mapping, target_name: str, source: str) -> dict:
    target = config["targets"][target_name]
    split = source if source in TARGET_SPLITS else None
    return {"source": source_block(config, target_name, source), "split": split, **target_spec_slice(target)}


def target_splits(config: Mapping, target_name: str) -> list[str]:
    """The splits of its dataset a target has (`splits`; a teacher from outside may need none)."""
    return list(config["targets"][target_name].get("splits", TARGET_SPLITS))


def loads_teacher(config: Mapping, target_name: str) -> bool:
    """Whether the target's teacher comes from a file (`teacher.load`) instead of training."""
    return "load" in config["targets"][target_name]["teacher"]


def import_slice(config: Mapping, target_name: str) -> dict:
    """What importing a teacher from outside reads: the target's model I/O and the `load` block."""
    target = config["targets"][target_name]
    return {**model_io_slice(target), "target": target_name, "load": dict(target["teacher"]["load"])}


def teacher_slice(config: Mapping, target_name: str) -> dict:
    target = config["targets"][target_name]
    # min_accuracy only sets when the teacher's results warn: changing it must not retrain
    teacher = {key: value for key, value in target["teacher"].items() if key != "min_accuracy"}
    return {**model_io_slice(target), "teacher": teacher}


DEFAULT_VARIANT = "default"


def run_name(set_name: str, variant: str = DEFAULT_VARIANT) -> str:
    """The student run of a transfer set in a variant: 'S' for the default, 'S.V' otherwise."""
    return set_name if variant == DEFAULT_VARIANT else f"{set_name}.{variant}"


def parse_run(run: str) -> tuple[str, str]:
    """(set, variant) of a run name made by `run_name`."""
    set_name, _, variant = run.partition(".")
    return set_name, variant or DEFAULT_VARIANT


def variant_student(config: Mapping, target_name: str, variant: str = DEFAULT_VARIANT) -> dict:
    """The target's student block with the variant's keys replacing its own (defaults filled)."""
    student = copy.deepcopy(config["targets"][target_name]["student"])
    if variant == DEFAULT_VARIANT:
        return student
    if variant not in config["variants"]:
        raise DfkdError(f"student variant '{variant}' is not defined under variants (defined: {sorted(config['variants'])})")
    return merge_variant(student, config["variants"][variant])[0]


def merge_variant(student: Mapping, overrides: Mapping, where: str = "") -> tuple[dict, list[str]]:
    """(student with the variant's keys replacing its own, defaults filled; schema problems)."""
    merged = {**copy.deepcopy(dict(student)), **copy.deepcopy(dict(overrides))}
    return merged, schema_errors(merged, definition_schema("training"), where)


def student_slice(config: Mapping, target_name: str, variant: str = DEFAULT_VARIANT, seed: int = 0) -> dict:
    """What a run's student reads. Replicate seed k adds k to the student's configured `seed`
    (initialisation, shuffling, augmentation draws); seed 0 is the student as configured."""
    target = config["targets"][target_name]
    student = variant_student(config, target_name, variant)
    student["seed"] = int(student.get("seed", 0)) + int(seed)
    return {**model_io_slice(target), "student": student}


def replicate_seeds(config: Mapping) -> list[int]:
    """The replicate seeds of every run and transfer set (config `seeds`)."""
    return [int(s) for s in config.get("seeds", [0])]


def table_seeds(config: Mapping, table: str) -> list[int]:
    """The seeds of a study table's runs: its own `seeds`, else config `seeds`."""
    own = config["study"]["tables"][table].get("seeds")
    return [int(s) for s in own] if own else replicate_seeds(config)


def target_sets(config: Mapping, target_name: str) -> list[str]:
    """The transfer sets a target builds, in config order. Without `sets`, every set that draws
    only on splits the target has (a target without a train split has no `real` set)."""
    chosen = config["targets"][target_name].get("sets")
    if chosen is not None:
        return [name for name in config["transfer_sets"] if name in chosen]
    lacking = set(TARGET_SPLITS) - set(target_splits(config, target_name))
    return [name for name, recipe in config["transfer_sets"].items() if not lacking & set(recipe["sources"])]


def assemble_slice(config: Mapping, target_name: str, set_name: str, seed: int = 0) -> dict:
    """What assembling a set reads. Replicate seed k adds k to the recipe's `seed` (its random
    picks within each source); seed 0 is the recipe as configured."""
    target = config["targets"][target_name]
    recipe = config["transfer_sets"][set_name]
    return {
        "sources": list(recipe["sources"]),
        "balanced": recipe["balanced"],
        "num_classes": target["num_classes"],
        "per_class": recipe.get("per_class", target.get("per_class")),
        "total": recipe.get("total", target.get("total")),
        "classes": recipe.get("classes"),
        "size": recipe.get("size"),
        "seed": int(recipe["seed"]) + int(seed),
        # only where set: the default row order leaves existing sets' params (and files) as they were
        **({"prefer": recipe["prefer"]} if recipe.get("prefer", "random") != "random" else {}),
    }


def study_table_slice(config: Mapping, target_name: str, table: str) -> dict:
    """What one study table reads: its rows' recipes, variants, the target's caps and dataset."""
    from dfkd.study.published import study_dataset

    target = config["targets"][target_name]
    spec = config["study"]["tables"][table]
    return {
        "target": target_name,
        "table": table,
        "dataset": study_dataset(target.get("dataset", {})),
        "num_classes": target["num_classes"],
        "per_class": target.get("per_class"),
        "total": target.get("total"),
        "variants": list(spec["variants"]),
        "seeds": table_seeds(config, table),
        "min_effect": float(config["study"]["min_effect"]),
        "rows": [
            {"row": row, "set": set_name, "recipe": assemble_slice(config, target_name, set_name)}
            for row, set_name in spec["rows"].items()
        ],
    }


def as_json(value: Any) -> str:
    """Canonical JSON for a params slice (key order fixed, so unchanged configs compare equal)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
