rule distance:
    """Exact Hausdorff distance between a transfer set's and the training set's teacher features."""
    input:
        manifest=path("{target}", "transfer", "{set}.parquet"),
        features=set_files("features", ".h5"),
        train=path("{target}", "features", "train.h5"),
    output:
        path("{target}", "distance", "{set}.json"),
    log:
        path("{target}", "logs", "distance/{set}.log"),
    benchmark:
        path("{target}", "benchmarks", "distance/{set}.tsv")
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "dfkd distance --manifest {input.manifest} --features {input.features}"
        " --train-features {input.train} --out {output} --threads {threads} > {log} 2>&1"
