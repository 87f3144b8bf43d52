rule distill:
    """Distil a student from the teacher on a transfer set; resumes from its checkpoint.pt."""
    input:
        teacher=path("{target}", "teacher", "model.pt"),
        manifest=path("{target}", "transfer", "{set}.parquet"),
        data=set_files("data", ".h5"),
        features=set_files("features", ".h5"),
        test=path("{target}", "data", "test.h5"),
    output:
        model=path("{target}", "students", "{set}/model.pt"),
        metrics=path("{target}", "students", "{set}/metrics.json"),
        log_csv=path("{target}", "students", "{set}/log.csv"),
    log:
        path("{target}", "logs", "distill/{set}.log"),
    benchmark:
        path("{target}", "benchmarks", "distill/{set}.tsv")
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        slice=as_json_param(lambda w: dfkd_config.student_slice(config, w.target)),
        out_dir=lambda w: path(w.target, "students", w.set),
    shell:
        "dfkd distill --teacher {input.teacher} --manifest {input.manifest} --data {input.data}"
        " --features {input.features} --test {input.test} --params {params.slice:q}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
