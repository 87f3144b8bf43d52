rule plot_class_counts:
    """Bar chart of a transfer set's teacher-class counts before and after balancing."""
    input:
        path("{target}", "transfer", "{set}.counts.csv"),
    output:
        report(
            path("{target}", "figures", "class_counts_{set}.png"),
            caption="../report/class_counts.rst",
            category="Class frequencies",
            labels={"target": "{target}", "transfer set": "{set}"},
        ),
    log:
        path("{target}", "logs", "plot/{set}.log"),
    conda:
        "../envs/dfkd.yaml"
    shell:
        "dfkd plot-counts --counts {input} --title {wildcards.target}/{wildcards.set:q} --out {output} > {log} 2>&1"


rule summary_table:
    """One row per distilled transfer set: size, class balance, student accuracy, distance."""
    input:
        teacher=path("{target}", "teacher", "metrics.json"),
        counts=lambda w: [
            path(w.target, "transfer", f"{s}.counts.csv")
            for s in target_sets(w.target)
        ],
        students=lambda w: [
            path(w.target, "students", f"{s}/metrics.json")
            for s in distilled_sets(w.target)
        ],
        distances=lambda w: [
            path(w.target, "distance", f"{s}.json") for s in target_sets(w.target)
        ],
    output:
        csv=report(
            path("{target}", "tables", "summary.csv"),
            caption="../report/summary.rst",
            category="Results",
            labels={"target": "{target}", "table": "summary (csv)"},
        ),
        md=path("{target}", "tables", "summary.md"),
    log:
        path("{target}", "logs", "summary_table.log"),
    conda:
        "../envs/dfkd.yaml"
    params:
        slice=as_json_param(lambda w: report_slice(w.target)),
        target_dir=lambda w: path(w.target, ""),
    shell:
        "dfkd report --target-dir {params.target_dir} --params {params.slice:q}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
