rule distance:
    """Exact Hausdorff distance between a transfer set's and the training set's teacher features."""
    input:
        manifest=replicate("{target}", layout.manifest, "{set}", "{seed}"),
        features=set_files("features", ".h5"),
        train=path("{target}", "features", "train.h5"),
    output:
        replicate("{target}", layout.distance, "{set}", "{seed}"),
    log:
        path("{target}", "logs", "distance/{set}/seed{seed}.log"),
    benchmark:
        path("{target}", "benchmarks", "distance/{set}/seed{seed}.tsv")
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        # the device: a params function of `input` is no rerun trigger (changing it re-runs nothing)
        device=lambda w, input: DEVICE,
    shell:
        "dfkd distance --manifest {input.manifest} --features {input.features} --device {params.device}"
        " --train-features {input.train} --out {output} --threads {threads} > {log} 2>&1"
