"""Changing one thing re-runs exactly what depends on it (Snakemake's params/mtime triggers)."""
import re

import pytest
import yaml

from conftest import requires_fmnist, snakemake, tiny_config

pytestmark = [pytest.mark.slow, requires_fmnist]

SETS = list(tiny_config()["transfer_sets"])
TAIL = {("summary_table", "target=fmnist"), ("all", "")}
CURVES = {("training_curves", "target=fmnist")}  # drawn from the first seed's students


def planned_jobs(workdir, config) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run of `all` plans with `config`."""
    return planned_jobs_of(workdir, config)


def planned_jobs_of(workdir, config, *targets: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run plans with `config` (the run's config is restored)."""
    config_file = workdir / "config.yaml"
    original = config_file.read_text()
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        output = snakemake(workdir, "--dry-run", *targets).stdout
    finally:
        config_file.write_text(original)
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        match = re.match(r"(?:local)?rule (\w+):", block.strip())
        if match:
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.add((match.group(1), wildcards.group(1) if wildcards else ""))
    return jobs


def replicate_jobs(name, seed, target="fmnist"):
    """The jobs of one seed of a transfer set: its assembly, its student and its distance."""
    wildcards = f"target={target}, set={name}, seed={seed}"
    return {("assemble", wildcards), ("distill", f"target={target}, run={name}, seed={seed}"), ("distance", wildcards)}


def set_chain(*sets):
    jobs = set()
    for name in sets:
        jobs |= replicate_jobs(name, 0) | {("plot_class_counts", f"target=fmnist, set={name}")}
    return jobs | CURVES if sets else jobs


def source_chain(source):
    wildcards = f"target=fmnist, source={source}"
    return {("prepare", wildcards), ("extract_features", wildcards), ("label_source", wildcards)}


def test_unchanged_config_plans_nothing(tiny_run):
    assert planned_jobs(tiny_run, tiny_config()) == set()


def test_editing_one_source_reruns_its_chain_only(tiny_run):
    config = tiny_config()
    config["sources"]["strokes"]["seed"] = 99
    assert planned_jobs(tiny_run, config) == source_chain("strokes") | set_chain("synthetic_bal") | TAIL


def test_editing_a_shared_source_reruns_every_set_that_draws_on_it(tiny_run):
    config = tiny_config()
    config["sources"]["noise"]["count"] = 400
    chain = source_chain("noise") | set_chain("noise")
    in_target_b = {(rule, w.replace("target=fmnist", "target=fmnist_b")) for rule, w in chain}
    expected = chain | in_target_b | TAIL | {("summary_table", "target=fmnist_b")}
    assert planned_jobs(tiny_run, config) == expected


def test_editing_a_recipe_reruns_that_set_only(tiny_run):
    config = tiny_config()
    config["transfer_sets"]["natural_bal"]["seed"] = 7
    assert planned_jobs(tiny_run, config) == set_chain("natural_bal") | TAIL


def test_editing_the_student_reruns_the_students_only(tiny_run):
    config = tiny_config()
    config["targets"]["fmnist"]["student"]["temperature"] = 4
    expected = {("distill", f"target=fmnist, run={name}, seed=0") for name in SETS} | TAIL | CURVES
    assert planned_jobs(tiny_run, config) == expected


def test_a_variant_reruns_its_own_runs_only(tiny_run):
    """Adding a variant plans nothing for `all`; editing it re-plans only the S.V runs a table asks for."""
    config = tiny_config()
    config["variants"] = {"noaug": {"augment": {}}}
    assert planned_jobs(tiny_run, config) == set()  # `all` shows the default students only
    config["study"] = {"targets": ["fmnist"], "tables": {"main": {"rows": {"noise": "noise"}, "variants": ["noaug"]}}}
    jobs = planned_jobs_of(tiny_run, config, "all_tables")
    assert {w for rule, w in jobs if rule == "distill"} == {"target=fmnist, run=noise.noaug, seed=0"}
    assert ("study_table", "target=fmnist, table=main") in jobs and ("train_teacher", "target=fmnist") not in jobs


def test_editing_the_teacher_reruns_its_target_only(tiny_run):
    config = tiny_config()
    config["targets"]["fmnist"]["teacher"]["epochs"] = 3
    jobs = planned_jobs(tiny_run, config)
    assert ("train_teacher", "target=fmnist") in jobs
    assert not any("fmnist_b" in wildcards for _, wildcards in jobs)
    assert not any(rule == "prepare" for rule, _ in jobs)
    sources = {"train", "test", "noise", "shapes", "strokes", "patches", "digits"}
    assert {w for rule, w in jobs if rule == "extract_features"} == {f"target=fmnist, source={s}" for s in sources}
    assert {w for rule, w in jobs if rule == "distill"} == {f"target=fmnist, run={s}, seed=0" for s in SETS}


def test_adding_a_source_and_a_set_adds_only_their_jobs(tiny_run):
    config = tiny_config()
    config["sources"]["noise2"] = {"kind": "noise", "count": 300, "distribution": "gaussian", "seed": 9}
    config["transfer_sets"]["noise2_bal"] = {"sources": ["noise2", "patches"]}
    config["targets"]["fmnist_b"]["sets"] = ["noise"]
    assert planned_jobs(tiny_run, config) == source_chain("noise2") | set_chain("noise2_bal") | TAIL


def test_adding_a_seed_plans_only_that_seeds_jobs(tiny_run):
    """Seed 1 adds its own assembly, student and distance per set, and the tables that aggregate
    them; seed 0's files, the teacher, the sources and the class-count charts stay."""
    config = tiny_config()
    config["seeds"] = [0, 1]
    expected = {job for name in SETS for job in replicate_jobs(name, 1)}
    expected |= replicate_jobs("noise", 1, "fmnist_b") | TAIL | {("summary_table", "target=fmnist_b")}
    assert planned_jobs(tiny_run, config) == expected


def test_the_teacher_warning_threshold_retrains_nothing(tiny_run):
    config = tiny_config()
    config["targets"]["fmnist"]["teacher"]["min_accuracy"] = 0.95
    assert planned_jobs(tiny_run, config) == TAIL  # the summary shows the new threshold's warning
