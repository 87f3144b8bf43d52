"""Checks of a schema-valid config that span several keys, and of the data it points to.

`cross_field_errors`: settings that each pass the schema but together would fail, or be
silently ignored, later in a job (a set keeping more classes than its target has, a `size`
too small to give every kept class a row, caps that contradict each other, a target whose
dataset has no labels or more classes than `num_classes`, ...).
`data_errors`: the datasets of the targets the workflow builds (`run_targets` and
`study.targets`) and the disk sources of their transfer sets are where the config says,
checked with the loaders' own search (`dfkd.sources.torchvision_data.find_dataset`), so that
`dfkd validate` and `snakemake -n` fail with the places looked in, not a job hours later.
Both return one line per problem, naming the key; `dfkd.config.validate_config` lists them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from dfkd.errors import DfkdError
from dfkd.slices import target_sets
from dfkd.sources.fill import is_conditional

SPLITS = ("train", "test")
UNLABELLED_KINDS = ("noise", "shapes", "strokes", "patches", "fill", "impressions", "inversion")  # generators: no ground truth
DIGITS_CLASSES = 10


def built_targets(config: Mapping[str, Any]) -> list[str]:
    """The targets a run of the workflow builds: `run_targets`, then `study.targets`."""
    names = [*config["run_targets"], *config.get("study", {}).get("targets", [])]
    return [name for name in dict.fromkeys(names) if name in config["targets"]]


def _sets_of(config: Mapping[str, Any], target_name: str) -> list[str]:
    return target_sets(config, target_name)


def _splits_of(target: Mapping[str, Any]) -> list[str]:
    return list(target.get("splits", SPLITS))


# ---------------------------------------------------------------------------- cross-field
def cross_field_errors(config: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for name, target in config["targets"].items():
        problems += _target_errors(name, target)
        problems += _teacher_load_errors(name, target)
        for set_name in _sets_of(config, name):
            problems += _recipe_errors(set_name, config["transfer_sets"][set_name], name, target)
            lacking = [s for s in config["transfer_sets"][set_name]["sources"] if s in SPLITS and s not in _splits_of(target)]
            if lacking:
                problems.append(
                    f"targets.{name}.sets: '{set_name}' draws on the {lacking[0]} split, which targets.{name} does not "
                    f"have (splits: {_splits_of(target)}); leave '{set_name}' out of targets.{name}.sets"
                )
    for name in config.get("study", {}).get("targets", []):
        if name in config["targets"] and "test" not in _splits_of(config["targets"][name]):
            problems.append(f"study.targets: '{name}' has no test split, and the study's tables compare test "
                            "accuracies; leave it out of study.targets")
    for name, recipe in config["transfer_sets"].items():
        problems += _recipe_only_errors(name, recipe)
        problems += _conditional_fill_errors(name, recipe, config["sources"])
    for variant, overrides in config["variants"].items():
        problems += _scale_errors(f"variants.{variant}", overrides)
    return list(dict.fromkeys(problems))  # a set built by several targets: each problem once


def _dataset_classes(block: Mapping[str, Any]) -> int | None:
    """How many classes a target's dataset has, where the kind alone tells."""
    from dfkd.sources.torchvision_data import CLASS_NAMES

    if block["kind"] == "digits":
        return DIGITS_CLASSES
    if block["kind"] == "torchvision":
        return 100 if block.get("name") == "CIFAR100" else len(CLASS_NAMES.get(block.get("name"), [])) or None
    return None


def _teacher_load_errors(name: str, target: Mapping[str, Any]) -> list[str]:
    """A teacher from outside (`teacher.load`): what its block and the target's splits need."""
    where, teacher = f"targets.{name}.teacher", target["teacher"]
    if "load" in target["student"]:
        return [f"targets.{name}.student.load: applies to teachers only (targets.{name}.teacher.load)"]
    if "load" not in teacher:
        if "train" not in _splits_of(target):
            return [f"{where}: targets.{name} has no train split to train its teacher on; give teacher.load "
                    f"(a pretrained teacher file) or add train to targets.{name}.splits"]
        return []
    from dfkd.models import MODELS

    load, problems = teacher["load"], []
    if "arch" in teacher:
        problems.append(f"{where}.arch: not used with teacher.load; name the architecture in {where}.load.arch")
    if load["format"] in ("state_dict", "torchvision") and "arch" not in load:
        problems.append(f"{where}.load.arch: format {load['format']} needs the architecture's name")
    if load["format"] == "state_dict" and load.get("arch", next(iter(MODELS))) not in MODELS:
        problems.append(f"{where}.load.arch: '{load['arch']}' is not a dfkd architecture (known: {sorted(MODELS)}); "
                        "for a torchvision model set format: torchvision")
    if load["format"] in ("torchscript", "export") and "layer" in load:
        problems.append(f"{where}.load.layer: format {load['format']} gives no layers; drop layer (features are then "
                        "the logits) or give the weights as format state_dict or torchvision")
    return problems


def _dataset_errors(name: str, target: Mapping[str, Any], dataset: Mapping[str, Any]) -> list[str]:
    problems = []
    if dataset["kind"] in UNLABELLED_KINDS or (dataset["kind"] == "imagefolder" and dataset.get("labels") == "none"):
        problems.append(
            f"targets.{name}.dataset: kind '{dataset['kind']}'{' with labels: none' if dataset['kind'] == 'imagefolder' else ''} "
            "gives no labels, but a target's teacher trains on labelled train/test data "
            "(use torchvision, imagefolder with class folders, or digits)"
        )
    classes = _dataset_classes(dataset)
    if classes is not None and target["num_classes"] < classes:
        problems.append(
            f"targets.{name}.num_classes: {target['num_classes']}, but its dataset "
            f"({dataset.get('name', dataset['kind'])}) has {classes} classes; set num_classes: {classes}"
        )
    return problems


def _target_errors(name: str, target: Mapping[str, Any]) -> list[str]:
    problems = []
    dataset = target.get("dataset")
    if dataset is None and _splits_of(target):
        problems.append(f"targets.{name}.dataset: required for the splits {_splits_of(target)}; give the dataset, or "
                        f"set targets.{name}.splits: [] (with a teacher from outside, teacher.load)")
    problems += _dataset_errors(name, target, dataset) if dataset is not None else []
    if "min_accuracy" in target["student"]:
        problems.append(f"targets.{name}.student.min_accuracy: applies to teachers only (targets.{name}.teacher.min_accuracy)")
    for role in ("teacher", "student"):
        problems += _scale_errors(f"targets.{name}.{role}", target[role])
    return problems


def _scale_errors(where: str, training: Mapping[str, Any]) -> list[str]:
    scale = (training.get("augment") or {}).get("scale")
    if scale is not None and len(scale) == 2 and scale[0] > scale[1]:
        return [f"{where}.augment.scale: {scale} needs [min, max] with min <= max"]
    return []


def _recipe_only_errors(name: str, recipe: Mapping[str, Any]) -> list[str]:
    problems, where = [], f"transfer_sets.{name}"
    if recipe.get("size") is not None:
        both = [key for key in ("per_class", "total") if recipe.get(key) is not None]
        if both:
            problems.append(f"{where}: size fixes the set's total and replaces {' and '.join(both)}; set size alone, or drop it")
    if not recipe["balanced"]:
        if recipe.get("per_class") is not None:
            problems.append(f"{where}.per_class: has no effect on an unbalanced set (balanced: false); drop it or set balanced: true")
        if len(recipe["sources"]) > 1:
            problems.append(
                f"{where}.sources: an unbalanced set draws on its first source alone, so {recipe['sources'][1:]} "
                "would never be used; drop them or set balanced: true"
            )
    return problems


def _conditional_fill_errors(name: str, recipe: Mapping[str, Any], sources: Mapping[str, Any]) -> list[str]:
    """A fill whose generator is a synthesiser tops up the sources before it in a balanced set."""

    problems = []
    for position, source in enumerate(recipe["sources"]):
        if source in sources and is_conditional(sources[source]):
            if position == 0:
                problems.append(f"transfer_sets.{name}.sources: '{source}' makes only the rows the sources before it "
                                "leave short, but it comes first; put it after the sources it fills")
            elif not recipe["balanced"]:
                problems.append(f"transfer_sets.{name}: an unbalanced set never uses its fill '{source}'; "
                                "set balanced: true or drop the fill")
    return problems


def _recipe_errors(name: str, recipe: Mapping[str, Any], target_name: str, target: Mapping[str, Any]) -> list[str]:
    """What a set's recipe contradicts on one target that builds it (`assemble` would fail or fall short)."""
    where, problems = f"transfer_sets.{name}", []
    num_classes = target["num_classes"]
    classes = recipe.get("classes")
    if classes is not None and classes > num_classes:
        problems.append(
            f"{where}.classes: {classes} exceeds targets.{target_name}.num_classes={num_classes}, a target that "
            f"builds this set; lower classes or leave the set out of targets.{target_name}.sets"
        )
        return problems
    kept = classes or num_classes
    size = recipe.get("size")
    if recipe["balanced"] and size is not None and size < kept:
        problems.append(
            f"{where}.size: {size} rows cannot give each of the {kept} kept classes of targets.{target_name} a row; "
            f"raise size to at least {kept} or lower classes"
        )
    per_class = recipe.get("per_class", target.get("per_class"))
    total = recipe.get("total", target.get("total"))
    if recipe["balanced"] and size is None and per_class is not None and total is not None and per_class * kept > total:
        problems.append(
            f"{where}: per_class={per_class} x {kept} classes exceeds total={total} on targets.{target_name} "
            f"(each class would get only {total // kept}); lower per_class or raise total"
        )
    return problems


# ---------------------------------------------------------------------------- data on disk
def data_errors(config: Mapping[str, Any]) -> list[str]:
    """Where a built target's dataset, or a disk source of its sets, is not found."""
    problems: list[str] = []
    checked: set[str] = set()
    for name in built_targets(config):
        target = config["targets"][name]
        if _splits_of(target):
            problems += _block_data_errors(f"targets.{name}.dataset", target["dataset"], tuple(_splits_of(target)))
        load = target["teacher"].get("load")
        if load is not None and not Path(load["path"]).is_file():
            problems.append(f"targets.{name}.teacher.load.path: teacher file {_where_relative(Path(load['path']))} "
                            "not found; put the teacher there or fix the path")
        for set_name in _sets_of(config, name):
            for source in config["transfer_sets"][set_name]["sources"]:
                if source in SPLITS or source in checked or source not in config["sources"]:
                    continue
                checked.add(source)
                problems += _block_data_errors(f"sources.{source}", config["sources"][source], (None,))
    return problems


def _where_relative(path: Path) -> str:
    return str(path) if path.is_absolute() else f"{path} (relative to {os.getcwd()})"


def _block_data_errors(where: str, block: Mapping[str, Any], splits: tuple[str | None, ...]) -> list[str]:
    from dfkd.sources import validate_source_config
    from dfkd.sources.torchvision_data import _how_to_get, find_dataset

    try:
        kind, args = validate_source_config(dict(block))
    except DfkdError as exc:
        return [f"{where}: {exc}"]
    if kind.name == "torchvision":
        if args["download"]:
            return []  # fetched into root by its prepare job
        root = Path(args["root"])
        for split in splits:
            split = split or args["split"]
            searched: list[str] = []
            if find_dataset(args["name"], root, split, searched) is None:
                return [
                    f"{where}: {args['name']} ({split} split) not found under root {_where_relative(root)}; "
                    f"looked for {'; '.join(searched)}. To get it: {_how_to_get(args['name'], root)}"
                ]
    elif kind.name == "imagefolder":
        for split in splits:
            folder = Path(args["root"])
            if split is not None:
                folder = folder / args.get("splits", {}).get(split, split)
            if not folder.is_dir():
                return [f"{where}.root: image folder {_where_relative(folder)} does not exist (or is not a folder)"]
    return []
