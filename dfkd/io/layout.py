"""Where a target's replicated artifacts live (relative to `results/{target}/`).

A replicate is one seed of a transfer set or a run. Seed k's transfer set, its class counts and
its distance, and seed k's student of a run, each have their own file, so that every replicate
is an ordinary job with its own provenance (audit, lineage and incremental re-runs work per
seed), and adding a seed adds only its own files:

    transfer/{set}/seed{k}.parquet, transfer/{set}/seed{k}.counts.csv
    distance/{set}/seed{k}.json
    students/{run}/seed{k}/model.pt, metrics.json, log.csv, checkpoint.pt
    data|features|labels/sets/{set}/seed{k}/{source}.*  (a class-conditional fill, `set_source`)

The Snakemake rules (rules/common.smk) and the tables' readers both use these functions, and
the names of student runs: 'S' for set S's default student, 'S.V' for variant V.
"""
from __future__ import annotations


def manifest(set_name: str, seed: int | str) -> str:
    return f"transfer/{set_name}/seed{seed}.parquet"


def counts(set_name: str, seed: int | str) -> str:
    return f"transfer/{set_name}/seed{seed}.counts.csv"


def distance(set_name: str, seed: int | str) -> str:
    return f"distance/{set_name}/seed{seed}.json"


def student_dir(run: str, seed: int | str) -> str:
    return f"students/{run}/seed{seed}"


def student_metrics(run: str, seed: int | str) -> str:
    return f"{student_dir(run, seed)}/metrics.json"


def student_log(run: str, seed: int | str) -> str:
    return f"{student_dir(run, seed)}/log.csv"


def set_source(source: str, set_name: str, seed: int | str) -> str:
    """A source made per transfer set and seed (a class-conditional fill): its name under
    data/, features/ and labels/ (the file stem stays the source's name)."""
    return f"sets/{set_name}/seed{seed}/{source}"


# ---------------------------------------------------------------------------- run names
DEFAULT_VARIANT = "default"


def run_name(set_name: str, variant: str = DEFAULT_VARIANT) -> str:
    """The student run of a transfer set in a variant: 'S' for the default, 'S.V' otherwise."""
    return set_name if variant == DEFAULT_VARIANT else f"{set_name}.{variant}"


def parse_run(run: str) -> tuple[str, str]:
    """(set, variant) of a run name made by `run_name`."""
    set_name, _, variant = run.partition(".")
    return set_name, variant or DEFAULT_VARIANT
