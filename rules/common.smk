# Config validation, path helpers, input functions and the per-rule config slices.
# Each rule's `params.slice` is exactly the config its stage reads, so Snakemake's params
# trigger re-runs a job exactly when that part of the config changed.
import functools
import sys

from snakemake.utils import validate

import dfkd.config as dfkd_config
import dfkd.io.layout as layout
import dfkd.slices as dfkd_slices
from dfkd.errors import DfkdError
from dfkd.schema import SCHEMA_PATH
from dfkd.io.workflow_lock import clear_stale_lock
from dfkd.analysis.study import (
    FIGURE_TABLES,
    QUALITY_METRICS,
    TABLE_NAMES,
    TABLES_WITH_DISTANCES,
    TABLES_WITH_STUDENTS,
)
from dfkd.io.yaml_io import load_yaml

try:
    # Snakemake read the config files with PyYAML, which keeps the last of two equal keys
    for configfile in workflow.configfiles:
        load_yaml(configfile)  # refuses duplicate keys, naming both lines
    validate(config, schema=str(SCHEMA_PATH))
    # check_data: the built targets' datasets must be on disk (`-n` fails, not a job later)
    config.update(dfkd_config.validate_config(config, "config", check_data=True))
except DfkdError as error:
    sys.exit(f"dfkd: {error}")

# A Snakemake killed for real leaves its lock behind: removed here when its owner is provably gone
# (dfkd/io/workflow_lock.py), so that `snakemake --rerun-incomplete` alone resumes after a crash.
_stale_lock = clear_stale_lock(".", will_lock="--nolock" not in sys.argv)
if _stale_lock:
    print(_stale_lock, file=sys.stderr)

R = config["results"].rstrip("/")
NAME = "[A-Za-z0-9_-]+"
# a source's name under data/, features/, labels/: itself, or a per-set file (dfkd.io.layout.set_source)
SOURCE_STEM = rf"{NAME}|sets/{NAME}/seed\d+/{NAME}"


wildcard_constraints:
    target=NAME,
    source=NAME,
    set=NAME,
    run=rf"{NAME}(\.{NAME})?",
    seed=r"\d+",
    table="|".join(TABLE_NAMES),


def path(target, kind, name=""):
    """results/{target}/{kind}/{name}: the one place that knows the layout."""
    return f"{R}/{target}/{kind}/{name}" if name else f"{R}/{target}/{kind}"


SEEDS = dfkd_slices.replicate_seeds(config)
# The device of the GPU-capable stages: on their command line, never in params (it re-runs nothing).
DEVICE = config.get("device", "auto")


def replicate(target, file_of, name, seed):
    """results/{target}/ + a dfkd.io.layout path of one replicate (a set's or a run's seed)."""
    return f"{R}/{target}/{file_of(name, seed)}"


def replicates(target, file_of, names, seeds=None):
    """That path for every name and every seed (default: the configured seeds)."""
    return [replicate(target, file_of, n, s) for n in names for s in (seeds or SEEDS)]


def run_set(wildcards):
    """The transfer set of a job: its `set` wildcard, or the set of its `run` (set.variant)."""
    if "run" in wildcards.keys():
        return layout.parse_run(wildcards.run)[0]
    return wildcards.set


def run_variant(wildcards):
    return layout.parse_run(wildcards.run)[1]


def set_sources(wildcards):
    return config["transfer_sets"][run_set(wildcards)]["sources"]


def target_sets(target):
    return dfkd_slices.target_sets(config, target)


# ------------------------------------------------- targets without splits, teachers from outside


def has_split(target, split):
    """Whether the target has its dataset's `split` (config `splits`; default train and test)."""
    return split in dfkd_slices.target_splits(config, target)


def split_file(kind, split, suffix):
    """Input function: [the target's `split` file of `kind`], or [] when it lacks the split."""
    return lambda w: (
        [path(w.target, kind, f"{split}{suffix}")] if has_split(w.target, split) else []
    )


@functools.lru_cache(maxsize=None)
def teacher_file_sha256(target):
    """The sha256 of a target's teacher file (teacher.load.path), hashed once per Snakemake run."""
    from dfkd.io.provenance import file_sha256

    return file_sha256(config["targets"][target]["teacher"]["load"]["path"])


def targets_matching(loaded):
    """A `target` wildcard pattern for the targets whose teacher is (not) loaded from a file."""
    names = [
        t for t in config["targets"] if dfkd_slices.loads_teacher(config, t) == loaded
    ]
    return "|".join(names) if names else "(?!)"  # (?!) matches nothing


def distilled_sets(target):
    return dfkd_slices.distilled_sets(config, target)


def set_files(kind, suffix):
    """Input function: one file per source of the transfer set, e.g. its labels (a class-
    conditional fill's are its own per set and seed; `seed` wildcard, else the first seed).
    """
    return lambda w: [path(w.target, kind, f"{s}{suffix}") for s in set_stems(w)]


def set_stems(w):
    seed = w.seed if "seed" in w.keys() else SEEDS[0]
    return [
        dfkd_slices.source_stem(config, s, run_set(w), seed) for s in set_sources(w)
    ]


def sources_before(w):
    """The stems of the sources before a class-conditional fill `w.source` in set `w.set`."""
    stems = set_stems(w)
    return stems[: config["transfer_sets"][w.set]["sources"].index(w.source)]


def as_json_param(make_slice):
    """A params value: the canonical JSON of a config slice, computed from wildcards."""
    return lambda w: dfkd_slices.as_json(make_slice(w))


def all_outputs():
    outputs = []
    for target in config["run_targets"]:
        outputs += [
            path(target, "tables", "summary.csv"),
            path(target, "tables", "summary.md"),
        ]
        # the teacher's view of its own test split (features and labels), for audits and tables
        if has_split(target, "test"):
            outputs.append(path(target, "labels", "test.parquet"))
        # without training data the summary has no distances: the data-free scores stand in
        if not has_split(target, "train"):
            outputs += [
                path(target, "quality", f"{s}.json") for s in target_sets(target)
            ]
        if distilled_sets(target):
            outputs.append(path(target, "figures", "training_curves.png"))
        outputs += [
            path(target, "figures", f"class_counts_{s}.png")
            for s in target_sets(target)
        ]
    return outputs


def target_fill_sources(target):
    return dfkd_slices.target_fill_sources(config, target)


def target_synthesis_reports(target):
    return [
        path(target, r) for r in dfkd_slices.target_synthesis_reports(config, target)
    ]


def report_slice(target):
    return dfkd_slices.report_slice(config, target)


# ---------------------------------------------------------------- study tables


def study_table_inputs(w):
    """Every file the table reads (so Snakemake builds them first), and its figures."""
    spec = config["study"]["tables"][w.table]
    sets = list(dict.fromkeys(spec["rows"].values()))
    seeds = dfkd_slices.table_seeds(config, w.table)
    files = replicates(w.target, layout.counts, sets, seeds)
    if w.table in TABLES_WITH_DISTANCES:
        files += replicates(w.target, layout.distance, sets, seeds)
    if w.table in TABLES_WITH_STUDENTS:
        runs = [layout.run_name(s, v) for s in sets for v in spec["variants"]]
        files += replicates(w.target, layout.student_metrics, runs, seeds)
    if w.table == "main":
        files.append(path(w.target, "teacher", "metrics.json"))
    if w.table == "class_frequencies":
        files += [path(w.target, "figures", f"class_counts_{s}.png") for s in sets]
    return files


def quality_runs(target):
    return dfkd_slices.quality_runs(config, target)


def study_outputs():
    tables = [
        path(target, "tables", f"{table}{suffix}")
        for target in config["study"]["targets"]
        for table in config["study"]["tables"]
        for suffix in (".csv", ".md", ".json", ".tex")
    ]
    figures = [
        path(target, "figures", f"{table}.png")
        for target in config["study"]["targets"]
        for table in config["study"]["tables"]
        if table in FIGURE_TABLES
    ]
    quality = [
        path(target, "tables", f"quality{suffix}")
        for target in config["study"]["targets"]
        for suffix in (".csv", ".md", ".json", ".tex")
    ]
    return tables + figures + quality
