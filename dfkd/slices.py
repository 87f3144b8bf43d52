"""Config slices: exactly what each stage reads, and what the workflow builds for a target.

The only module that knows which config keys a stage reads. Each Snakemake rule passes its
stage's slice as `params` (canonical JSON, `as_json`), and the stage's command reads that and
nothing else, so that Snakemake re-runs a job exactly when its slice changed
(docs/configuration.md, "What re-runs when you change what"). Slices fill defaults from the
schema only (`dfkd.schema`), never from code.

- model and source slices: `prepare_slice`, `teacher_slice`, `import_slice`, `student_slice`;
- transfer sets: `assemble_slice` (replicate seed k adds k to the recipe's seed), and what a
  table or the summary reads (`study_table_slice`, `report_slice`);
- sources the teacher makes: `fill_slice` (a blind generator drawn until every class is full),
  `synthesis_slice` (a synthesised source) and `conditional_slice` (a class-conditional fill,
  per set and seed);
- what a target builds: `target_sets`, `target_splits`, `replicate_seeds`, `table_seeds`, and
  the wildcard patterns of the fill and synthesised sources.
"""
from __future__ import annotations

import copy
import json
import re
from typing import Any, Mapping, Sequence

from dfkd.io import layout
from dfkd.errors import DfkdError
from dfkd.io.layout import DEFAULT_VARIANT
from dfkd.schema import definition_schema, schema_errors
from dfkd.sources import validate_source_config
from dfkd.sources.fill import FILL_ONLY_KEYS, fill_default, is_conditional
from dfkd.analysis.study import TABLES_WITH_STUDENTS
from dfkd.analysis.study.published import study_dataset
from dfkd.synthesis import SYNTHESIZERS

TARGET_SPLITS = ("train", "test")


# ---------------------------------------------------------------------------- models and sources

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


# ---------------------------------------------------------------------------- fill and synthesised sources
def fill_sources(config: Mapping) -> list[str]:
    """Names of the config's sources of kind `fill` with a blind generator (a synthesiser's fill is
    made per set and seed by `dfkd.stages.synthesize`)."""
    return [name for name, block in config["sources"].items()
            if block.get("kind") == "fill" and not is_conditional(block)]


def fill_source_pattern(config: Mapping) -> str:
    """A wildcard regex matching exactly the fill sources (nothing when there are none)."""
    return pattern(fill_sources(config))


def fill_slice(config: Mapping, target_name: str, source: str) -> dict:
    """What the fill stage reads: the block (defaults filled), per_class, classes and spec."""
    target = config["targets"][target_name]
    _, block = validate_source_config(config["sources"][source])
    classes = target["num_classes"]
    per_class = block["per_class"] or target.get("per_class")
    if per_class is None and target.get("total"):
        per_class = target["total"] // classes
    if not per_class:
        raise DfkdError(
            f"sources.{source}: a fill source needs per_class; set it there or set "
            f"targets.{target_name}.per_class."
        )
    return {
        "source": source,
        "fill": block,
        "per_class": int(per_class),
        "num_classes": classes,
        "channels": target["channels"],
        "image_size": target["image_size"],
    }


def fill_runtime_minutes(block: Mapping) -> int:
    """A job time limit (minutes) for a fill block: its seconds budget and a margin, else 4 h."""
    seconds = (block.get("budget") or {}).get("seconds")
    return int(seconds * 1.5 / 60) + 30 if seconds else 240

def synthesized_sources(config: Mapping) -> list[str]:
    """Sources whose kind is a synthesiser (made once per target)."""
    return [name for name, block in config["sources"].items() if block.get("kind") in SYNTHESIZERS]


def conditional_sources(config: Mapping) -> list[str]:
    """Fill sources whose generator is a synthesiser (made per transfer set and seed)."""
    return [name for name, block in config["sources"].items() if is_conditional(block)]


def pattern(names: Sequence[str]) -> str:
    """A wildcard regex matching exactly `names` (nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) if names else "(?!x)x"


def source_stem(config: Mapping, source: str, set_name: str, seed: int | str) -> str:
    """The name under data/, features/, labels/ of a set's source: itself, or its per-set file."""
    block = config["sources"].get(source)
    return layout.set_source(source, set_name, seed) if block is not None and is_conditional(block) else source


def _spec_slice(target: Mapping) -> dict:
    return {key: target[key] for key in ("num_classes", "channels", "image_size", "mean", "std")}


def synthesis_slice(config: Mapping, target_name: str, source: str) -> dict:
    """What a synthesised source reads: its block (defaults filled) and the target's model I/O."""
    _, block = validate_source_config(config["sources"][source])
    return {"source": source, "block": block, **_spec_slice(config["targets"][target_name])}


def conditional_slice(config: Mapping, target_name: str, set_name: str, seed: int, source: str) -> dict:
    """What a class-conditional fill reads: its block, and the set's recipe up to the fill."""
    _, block = validate_source_config(config["sources"][source])
    block = {k: v for k, v in block.items() if not (k in FILL_ONLY_KEYS and v == fill_default(k))}  # unused
    recipe = assemble_slice(config, target_name, set_name, seed)
    position = recipe["sources"].index(source)
    recipe["sources"] = recipe["sources"][:position]  # later sources do not change what is short
    return {"source": source, "set": set_name, "replicate": int(seed), "fill": block, "recipe": recipe,
            **_spec_slice(config["targets"][target_name])}


# ---------------------------------------------------------------------------- summary and quality
def distilled_sets(config: Mapping, target_name: str) -> list[str]:
    """The target's sets that get a student (`distill: true`), in config order."""
    return [name for name in target_sets(config, target_name) if config["transfer_sets"][name]["distill"]]


def target_fill_sources(config: Mapping, target_name: str) -> list[str]:
    """The blind fill sources (kind `fill`) that the target's sets draw on, in config order."""
    used = {s for name in target_sets(config, target_name) for s in config["transfer_sets"][name]["sources"]}
    return [s for s in fill_sources(config) if s in used]


def target_synthesis_reports(config: Mapping, target_name: str) -> list[str]:
    """The synthesis reports (`*.synthesis.json` under data/) of the target's sets: one per
    synthesised source, and one per class-conditional fill, set and seed."""
    synthesized, reports = set(synthesized_sources(config)), []
    for name in target_sets(config, target_name):
        for source in config["transfer_sets"][name]["sources"]:
            if source in synthesized:
                reports.append(f"data/{source}.synthesis.json")
            elif is_conditional(config["sources"].get(source, {})):
                reports += [f"data/{layout.set_source(source, name, k)}.synthesis.json" for k in replicate_seeds(config)]
    return list(dict.fromkeys(reports))


def report_slice(config: Mapping, target_name: str) -> dict:
    """What the summary table shows: every transfer set's recipe (names the rows and columns)."""
    splits = target_splits(config, target_name)
    return {
        "target": target_name,
        "order": target_sets(config, target_name),
        "sets": {name: assemble_slice(config, target_name, name) for name in target_sets(config, target_name)},
        "distilled": distilled_sets(config, target_name),
        "seeds": replicate_seeds(config),
        "min_effect": config["study"]["min_effect"],
        "teacher_min_accuracy": config["targets"][target_name]["teacher"].get("min_accuracy"),
        "fill_sources": target_fill_sources(config, target_name),
        # only where they differ from the defaults (synthesis, distances, test accuracy): other params stay as they were
        **({"synthesis_reports": reports} if (reports := target_synthesis_reports(config, target_name)) else {}),
        **({} if "train" in splits else {"distances": False}),
        **({} if "test" in splits else {"score": "teacher_agreement"}),
    }


def quality_runs(config: Mapping, target_name: str) -> list[dict]:
    """Every run the config distils for a target, as {set, variant}: its own sets (default
    student) and every study table's rows in the table's variants."""
    runs = [(s, DEFAULT_VARIANT) for s in distilled_sets(config, target_name)]
    if target_name in config["study"]["targets"]:
        for table, spec in config["study"]["tables"].items():
            if table in TABLES_WITH_STUDENTS:
                runs += [(s, v) for s in spec["rows"].values() for v in spec["variants"]]
    return [{"set": s, "variant": v} for s, v in dict.fromkeys(runs)]


def quality_slice(config: Mapping, target_name: str, set_name: str) -> dict:
    """What a set's quality job reads: the teacher's classes and the set's per-class target."""
    return {"num_classes": config["targets"][target_name]["num_classes"],
            "per_class": quality_per_class(config, target_name, set_name)}


def quality_per_class(config: Mapping, target_name: str, set_name: str) -> int:
    """The per-class target of a set's fill score: its cap, else an even share of its size."""
    recipe = assemble_slice(config, target_name, set_name)
    k = recipe["classes"] or recipe["num_classes"]
    if recipe["per_class"]:
        return recipe["per_class"]
    return max(1, (recipe["size"] or recipe["total"] or k) // k)
