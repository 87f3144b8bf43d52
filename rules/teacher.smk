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
        # the device: a params function of `input` is no rerun trigger (changing it re-runs nothing)
        device=lambda w, input: DEVICE,
        slice=as_json_param(lambda w: dfkd_config.teacher_slice(config, w.target)),
        out_dir=lambda w: path(w.target, "teacher"),
        # a warning threshold, not a training setting: a params function that takes `input`
        # is left out of Snakemake's params trigger, so changing it never retrains the teacher
        min_accuracy=lambda w, input: config["targets"][w.target]["teacher"][
            "min_accuracy"
        ],
    shell:
        "dfkd train-teacher --train {input.train} --test {input.test} --params {params.slice:q} --device {params.device}"
        " --out-dir {params.out_dir} --threads {threads} --min-accuracy {params.min_accuracy} > {log} 2>&1"
