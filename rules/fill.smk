# Fill sources (kind `fill`): a generator drawn from until every teacher class is full. The
# output is an ordinary source, data/{source}.h5, that features, labels and assembly use as
# they use any other; `prepare` makes every other source (ruleorder below).
ruleorder: fill > prepare


rule fill:
    """Draw from a generator, labelled by the teacher, until every class holds per_class rows."""
    input:
        teacher=path("{target}", "teacher", "model.pt"),
    output:
        data=path("{target}", "data", "{source}.h5"),
        report=path("{target}", "data", "{source}.fill.json"),
    log:
        path("{target}", "logs", "fill/{source}.log"),
    benchmark:
        path("{target}", "benchmarks", "fill/{source}.tsv")
    wildcard_constraints:
        source=dfkd_slices.fill_source_pattern(config),
    conda:
        "../envs/dfkd.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=lambda w: dfkd_slices.fill_runtime_minutes(config["sources"][w.source]),
    params:
        slice=as_json_param(
            lambda w: dfkd_slices.fill_slice(config, w.target, w.source)
        ),
    shell:
        "dfkd fill --teacher {input.teacher} --params {params.slice:q} --out {output.data}"
        " --report {output.report} --threads {threads} > {log} 2>&1"
