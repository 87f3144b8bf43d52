# The study's tables (config `study`): one job per table and target, reading the run's files.
from dfkd.study.tables import BUILDERS, TABLES_WITH_DISTANCES, TABLES_WITH_STUDENTS


wildcard_constraints:
    table="|".join(BUILDERS),


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


rule study_table:
    """One of the study's tables, our numbers beside the study's, with a verdict per claim."""
    input:
        study_table_inputs,
    output:
        csv=report(
            path("{target}", "tables", "{table}.csv"),
            caption="../report/study_table.rst",
            category="Study tables",
            labels={"target": "{target}", "table": "{table}"},
        ),
        md=report(
            path("{target}", "tables", "{table}.md"),
            caption="../report/study_verdicts.rst",
            category="Study verdicts",
            labels={"target": "{target}", "table": "{table}"},
        ),
        json=path("{target}", "tables", "{table}.json"),
    log:
        path("{target}", "logs", "tables/{table}.log"),
    conda:
        "../envs/dfkd.yaml"
    params:
        slice=as_json_param(
            lambda w: dfkd_config.study_table_slice(config, w.target, w.table)
        ),
        target_dir=lambda w: path(w.target, ""),
    shell:
        "dfkd table --target-dir {params.target_dir} --params {params.slice:q}"
        " --out-csv {output.csv} --out-md {output.md} --out-json {output.json} > {log} 2>&1"


rule all_tables:
    """The main experiment (`all`) and every table of `study.tables` for every `study.targets`."""
    input:
        all_outputs(),
        study_outputs(),
