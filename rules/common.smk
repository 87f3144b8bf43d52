# Config validation, path helpers, input functions and the per-rule config slices.
# Each rule's `params.slice` is exactly the config its stage reads, so Snakemake's params
# trigger re-runs a job exactly when that part of the config changed.
import sys

from snakemake.utils import validate

import dfkd.config as dfkd_config
from dfkd.errors import DfkdError
from dfkd.study import TABLE_NAMES, TABLES_WITH_DISTANCES, TABLES_WITH_STUDENTS
from dfkd.yaml_io import load_yaml

try:
    # Snakemake read the config files with PyYAML, which keeps the last of two equal keys
    for configfile in workflow.configfiles:
        load_yaml(configfile)  # refuses duplicate keys, naming both lines
    validate(config, schema=str(dfkd_config.SCHEMA_PATH))
    # check_data: the built targets' datasets must be on disk (`-n` fails, not a job later)
    config.update(dfkd_config.validate_config(config, "config", check_data=True))
except DfkdError as error:
    sys.exit(f"dfkd: {error}")

R = config["results"].rstrip("/")
NAME = "[A-Za-z0-9_-]+"


wildcard_constraints:
    target=NAME,
    source=NAME,
    set=NAME,
    run=rf"{NAME}(\.{NAME})?",
    table="|".join(TABLE_NAMES),


def path(target, kind, name=""):
    """results/{target}/{kind}/{name}: the one place that knows the layout."""
    return f"{R}/{target}/{kind}/{name}" if name else f"{R}/{target}/{kind}"


def run_set(wildcards):
    """The transfer set of a job: its `set` wildcard, or the set of its `run` (set.variant)."""
    if "run" in wildcards.keys():
        return dfkd_config.parse_run(wildcards.run)[0]
    return wildcards.set


def run_variant(wildcards):
    return dfkd_config.parse_run(wildcards.run)[1]


def set_sources(wildcards):
    return config["transfer_sets"][run_set(wildcards)]["sources"]


def target_sets(target):
    return dfkd_config.target_sets(config, target)


def distilled_sets(target):
    return [
        name for name in target_sets(target) if config["transfer_sets"][name]["distill"]
    ]


def set_files(kind, suffix):
    """Input function: one file per source of the transfer set, e.g. its labels."""
    return lambda w: [path(w.target, kind, f"{s}{suffix}") for s in set_sources(w)]


def as_json_param(make_slice):
    """A params value: the canonical JSON of a config slice, computed from wildcards."""
    return lambda w: dfkd_config.as_json(make_slice(w))


def all_outputs():
    outputs = []
    for target in config["run_targets"]:
        outputs += [
            path(target, "tables", "summary.csv"),
            path(target, "tables", "summary.md"),
        ]
        # the teacher's view of its own test split (features and labels), for audits and tables
        outputs.append(path(target, "labels", "test.parquet"))
        outputs += [
            path(target, "figures", f"class_counts_{s}.png")
            for s in target_sets(target)
        ]
    return outputs


def assemble_options(w):
    """CLI options of `dfkd assemble` from the transfer set's recipe."""
    recipe = dfkd_config.assemble_slice(config, w.target, w.set)
    flags = [] if recipe["balanced"] else ["--unbalanced"]
    for key in ("per_class", "total", "classes", "size", "seed"):
        if recipe[key] is not None:
            flags += [f"--{key.replace('_', '-')}", str(recipe[key])]
    return " ".join(flags)


def report_slice(target):
    """What the summary table shows: every transfer set's recipe (names the rows and columns)."""
    return {
        "target": target,
        "order": target_sets(target),
        "sets": {
            name: dfkd_config.assemble_slice(config, target, name)
            for name in target_sets(target)
        },
        "distilled": distilled_sets(target),
    }


# ---------------------------------------------------------------- study tables


def study_table_inputs(w):
    """Every file the table reads (so Snakemake builds them first), and its figures."""
    spec = config["study"]["tables"][w.table]
    sets = list(dict.fromkeys(spec["rows"].values()))
    files = [path(w.target, "transfer", f"{s}.counts.csv") for s in sets]
    if w.table in TABLES_WITH_DISTANCES:
        files += [path(w.target, "distance", f"{s}.json") for s in sets]
    if w.table in TABLES_WITH_STUDENTS:
        files += [
            path(w.target, "students", f"{dfkd_config.run_name(s, v)}/metrics.json")
            for s in sets
            for v in spec["variants"]
        ]
    if w.table == "main":
        files.append(path(w.target, "teacher", "metrics.json"))
    if w.table == "class_frequencies":
        files += [path(w.target, "figures", f"class_counts_{s}.png") for s in sets]
    return files


def study_outputs():
    return [
        path(target, "tables", f"{table}{suffix}")
        for target in config["study"]["targets"]
        for table in config["study"]["tables"]
        for suffix in (".csv", ".md", ".json")
    ]
