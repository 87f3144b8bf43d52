rule distill:
    """Distil a student (run = set or set.variant) on a transfer set; resumes from its checkpoint.pt."""
    input:
        teacher=path("{target}", "teacher", "model.pt"),
        manifest=lambda w: path(w.target, "transfer", f"{run_set(w)}.parquet"),
        data=set_files("data", ".h5"),
        features=set_files("features", ".h5"),
        test=path("{target}", "data", "test.h5"),
    output:
        model=path("{target}", "students", "{run}/model.pt"),
        metrics=path("{target}", "students", "{run}/metrics.json"),
        log_csv=path("{target}", "students", "{run}/log.csv"),
    log:
        path("{target}", "logs", "distill/{run}.log"),
    benchmark:
        path("{target}", "benchmarks", "distill/{run}.tsv")
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        slice=as_json_param(
            lambda w: dfkd_config.student_slice(config, w.target, run_variant(w))
        ),
        out_dir=lambda w: path(w.target, "students", w.run),
    shell:
        "dfkd distill --teacher {input.teacher} --manifest {input.manifest} --data {input.data}"
        " --features {input.features} --test {input.test} --params {params.slice:q}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
