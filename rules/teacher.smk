# A target's teacher is trained (train_teacher) or imported from a file (import_teacher,
# config teacher.load): each rule's outputs match only its own targets.
TRAINS = f"{{target,{targets_matching(loaded=False)}}}"
LOADS = f"{{target,{targets_matching(loaded=True)}}}"


rule train_teacher:
    """Train the teacher on the target's data; resumes from teacher/checkpoint.pt."""
    input:
        train=path("{target}", "data", "train.h5"),
        test=path("{target}", "data", "test.h5"),
    output:
        model=path(TRAINS, "teacher", "model.pt"),
        metrics=path(TRAINS, "teacher", "metrics.json"),
        log_csv=path(TRAINS, "teacher", "log.csv"),
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
        slice=as_json_param(lambda w: dfkd_slices.teacher_slice(config, w.target)),
        out_dir=lambda w: path(w.target, "teacher"),
        # a warning threshold, not a training setting: a params function that takes `input`
        # is left out of Snakemake's params trigger, so changing it never retrains the teacher
        min_accuracy=lambda w, input: config["targets"][w.target]["teacher"][
            "min_accuracy"
        ],
    shell:
        "dfkd train-teacher --train {input.train} --test {input.test} --params {params.slice:q} --device {params.device}"
        " --out-dir {params.out_dir} --threads {threads} --min-accuracy {params.min_accuracy} > {log} 2>&1"


rule import_teacher:
    """A pretrained teacher from a file (teacher.load): checked against the target, measured on its test split if any."""
    input:
        teacher=lambda w: config["targets"][w.target]["teacher"]["load"]["path"],
        test=split_file("data", "test", ".h5"),
    output:
        model=path(LOADS, "teacher", "model.pt"),
        metrics=path(LOADS, "teacher", "metrics.json"),
    log:
        path("{target}", "logs", "import_teacher.log"),
    benchmark:
        path("{target}", "benchmarks", "import_teacher.tsv")
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        device=lambda w, input: DEVICE,
        slice=as_json_param(lambda w: dfkd_slices.import_slice(config, w.target)),
        # the file's content, not only its date, re-runs the import and all downstream of it
        sha256=lambda w: teacher_file_sha256(w.target),
        test=lambda w, input: f"--test {input.test}" if input.test else "",
        out_dir=lambda w: path(w.target, "teacher"),
        min_accuracy=lambda w, input: config["targets"][w.target]["teacher"][
            "min_accuracy"
        ],
    shell:
        "dfkd import-teacher --file {input.teacher} {params.test} --params {params.slice:q} --device {params.device}"
        " --out-dir {params.out_dir} --threads {threads} --min-accuracy {params.min_accuracy} > {log} 2>&1"
