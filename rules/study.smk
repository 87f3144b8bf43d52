# The study's tables (config `study`): one job per table and target, reading the run's files.


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
        tex=path("{target}", "tables", "{table}.tex"),
    log:
        path("{target}", "logs", "tables/{table}.log"),
    benchmark:
        path("{target}", "benchmarks", "tables/{table}.tsv")
    conda:
        "../envs/dfkd.yaml"
    params:
        slice=as_json_param(
            lambda w: dfkd_slices.study_table_slice(config, w.target, w.table)
        ),
        target_dir=lambda w: path(w.target, ""),
    shell:
        "dfkd table --target-dir {params.target_dir} --params {params.slice:q}"
        " --out-csv {output.csv} --out-md {output.md} --out-json {output.json}"
        " --out-tex {output.tex} > {log} 2>&1"


rule study_figure:
    """Error bars over seeds: accuracy per set (main), against k (Tables 1, 2), against distance (Table 5)."""
    input:
        path("{target}", "tables", "{table}.json"),
    output:
        report(
            path("{target}", "figures", "{table}.png"),
            caption="../report/study_figure.rst",
            category="Study figures",
            labels={"target": "{target}", "figure": "{table}"},
        ),
    log:
        path("{target}", "logs", "figures/{table}.log"),
    benchmark:
        path("{target}", "benchmarks", "figures/{table}.tsv")
    conda:
        "../envs/dfkd.yaml"
    shell:
        "dfkd plot-table --table-json {input} --out {output} > {log} 2>&1"


rule all_tables:
    """The main experiment (`all`) and every table of `study.tables` for every `study.targets`."""
    input:
        all_outputs(),
        study_outputs(),
