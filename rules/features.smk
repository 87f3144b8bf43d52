rule extract_features:
    """Teacher penultimate features and logits of every image of a source."""
    input:
        model=path("{target}", "teacher", "model.pt"),
        data=path("{target}", "data", "{source}.h5"),
    output:
        path("{target}", "features", "{source}.h5"),
    log:
        path("{target}", "logs", "features/{source}.log"),
    benchmark:
        path("{target}", "benchmarks", "features/{source}.tsv")
    wildcard_constraints:
        source=SOURCE_STEM,
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        # the device: a params function of `input` is no rerun trigger (changing it re-runs nothing)
        device=lambda w, input: DEVICE,
        batch_size=config["feature_batch_size"],
    shell:
        "dfkd features --model {input.model} --data {input.data} --out {output} --device {params.device}"
        " --batch-size {params.batch_size} --threads {threads} > {log} 2>&1"
