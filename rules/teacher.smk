rule train_teacher:
    """Train the teacher on the target's data; resumes from teacher/checkpoint.pt."""
    input:
        train=path("{target}", "data", "train.h5"),
        test=path("{target}", "data", "test.h5"),
    output:
        model=path("{target}", "teacher", "model.pt"),
        metrics=path("{target}", "teacher", "metrics.json"),
        log_csv=path("{target}", "teacher", "log.csv"),
    log:
        path("{target}", "logs", "train_teacher.log"),
    benchmark:
        path("{target}", "benchmarks", "train_teacher.tsv")
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        slice=as_json_param(lambda w: dfkd_config.teacher_slice(config, w.target)),
        out_dir=lambda w: path(w.target, "teacher"),
    shell:
        "dfkd train-teacher --train {input.train} --test {input.test} --params {params.slice:q}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
