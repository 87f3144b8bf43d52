rule assemble:
    """Algorithm 1: a (class-balanced) transfer set from its sources' teacher labels, in order (one replicate seed)."""
    input:
        labels=set_files("labels", ".parquet"),
        # the default total is the training set's size; without a train split, the base's rows
        train=split_file("labels", "train", ".parquet"),
    output:
        manifest=replicate("{target}", layout.manifest, "{set}", "{seed}"),
        counts=replicate("{target}", layout.counts, "{set}", "{seed}"),
    log:
        path("{target}", "logs", "assemble/{set}/seed{seed}.log"),
    benchmark:
        path("{target}", "benchmarks", "assemble/{set}/seed{seed}.tsv")
    conda:
        "../envs/dfkd.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        slice=as_json_param(
            lambda w: dfkd_slices.assemble_slice(config, w.target, w.set, int(w.seed))
        ),
        total_like=lambda w, input: f"--total-like {input.train}" if input.train else "",
    shell:
        "dfkd assemble --labels {input.labels} --params {params.slice:q} {params.total_like}"
        " --out {output.manifest} --counts {output.counts} > {log} 2>&1"
