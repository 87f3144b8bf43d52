rule prepare:
    """Convert a source (or the target's train/test split) to the target's spec."""
    output:
        path("{target}", "data", "{source}.h5"),
    log:
        path("{target}", "logs", "prepare/{source}.log"),
    benchmark:
        path("{target}", "benchmarks", "prepare/{source}.tsv")
    conda:
        "../envs/dfkd.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        slice=as_json_param(
            lambda w: dfkd_slices.prepare_slice(config, w.target, w.source)
        ),
    shell:
        "dfkd prepare --name {wildcards.source} --params {params.slice:q} --out {output} > {log} 2>&1"
