rule label_source:
    """The teacher's class, confidence and margin for every image of a source."""
    input:
        path("{target}", "features", "{source}.h5"),
    output:
        path("{target}", "labels", "{source}.parquet"),
    log:
        path("{target}", "logs", "labels/{source}.log"),
    benchmark:
        path("{target}", "benchmarks", "labels/{source}.tsv")
    wildcard_constraints:
        source=SOURCE_STEM,
    conda:
        "../envs/dfkd.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "dfkd label --features {input} --out {output} > {log} 2>&1"
