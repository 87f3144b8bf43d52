rule plot_class_counts:
    """Bar chart of a transfer set's teacher-class counts before and after balancing."""
    input:
        # the first seed's counts: balanced class counts only change with the seed where a
        # `size` or `total` cap binds (the summary and tables show every seed's size)
        lambda w: replicate(w.target, layout.counts, w.set, SEEDS[0]),
    output:
        report(
            path("{target}", "figures", "class_counts_{set}.png"),
            caption="../report/class_counts.rst",
            category="Class frequencies",
            labels={"target": "{target}", "transfer set": "{set}"},
        ),
    log:
        path("{target}", "logs", "plot/{set}.log"),
    benchmark:
        path("{target}", "benchmarks", "plot/{set}.tsv")
    conda:
        "../envs/dfkd.yaml"
    shell:
        "dfkd plot-counts --counts {input} --title {wildcards.target}/{wildcards.set:q} --out {output} > {log} 2>&1"


rule summary_table:
    """One row per transfer set: size, class balance, student accuracy and distance over seeds, paired verdicts."""
    input:
        teacher=path("{target}", "teacher", "metrics.json"),
        counts=lambda w: replicates(w.target, layout.counts, target_sets(w.target)),
        students=lambda w: replicates(
            w.target, layout.student_metrics, distilled_sets(w.target)
        ),
        # none without a train split (no training features to measure against)
        distances=lambda w: (
            replicates(w.target, layout.distance, target_sets(w.target))
            if has_split(w.target, "train")
            else []
        ),
        fills=lambda w: [
            path(w.target, "data", f"{s}.fill.json")
            for s in target_fill_sources(w.target)
        ],
        # images synthesised from the teacher: per source, and per set and seed for a conditional fill
        synthesis=lambda w: target_synthesis_reports(w.target),
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
    benchmark:
        path("{target}", "benchmarks", "summary_table.tsv")
    conda:
        "../envs/dfkd.yaml"
    params:
        slice=as_json_param(lambda w: report_slice(w.target)),
        target_dir=lambda w: path(w.target, ""),
    shell:
        "dfkd report --target-dir {params.target_dir} --params {params.slice:q}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule training_curves:
    """Test accuracy and loss per epoch of the target's students (first seed), from their log.csv."""
    input:
        lambda w: [
            replicate(w.target, layout.student_log, s, SEEDS[0])
            for s in distilled_sets(w.target)
        ],
    output:
        report(
            path("{target}", "figures", "training_curves.png"),
            caption="../report/training_curves.rst",
            category="Results",
            labels={"target": "{target}", "figure": "training curves"},
        ),
    log:
        path("{target}", "logs", "plot/training_curves.log"),
    benchmark:
        path("{target}", "benchmarks", "plot/training_curves.tsv")
    conda:
        "../envs/dfkd.yaml"
    params:
        labels=lambda w: distilled_sets(w.target),
        title=lambda w: f"{w.target}: students, seed {SEEDS[0]}",
    shell:
        "dfkd plot-curves --log-csv {input} --labels {params.labels} --title {params.title:q}"
        " --out {output} > {log} 2>&1"
