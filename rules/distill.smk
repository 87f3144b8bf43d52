rule distill:
    """Distil one seed's student of a run (set or set.variant) on that seed's transfer set; resumes from its checkpoint.pt."""
    input:
        teacher=path("{target}", "teacher", "model.pt"),
        manifest=lambda w: replicate(w.target, layout.manifest, run_set(w), w.seed),
        data=set_files("data", ".h5"),
        features=set_files("features", ".h5"),
        test=split_file("data", "test", ".h5"),
    output:
        model=path("{target}", "students", "{run}/seed{seed}/model.pt"),
        metrics=path("{target}", "students", "{run}/seed{seed}/metrics.json"),
        log_csv=path("{target}", "students", "{run}/seed{seed}/log.csv"),
    log:
        path("{target}", "logs", "distill/{run}/seed{seed}.log"),
    benchmark:
        path("{target}", "benchmarks", "distill/{run}/seed{seed}.tsv")
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        # the device: a params function of `input` is no rerun trigger (changing it re-runs nothing)
        device=lambda w, input: DEVICE,
        slice=as_json_param(
            lambda w: dfkd_slices.student_slice(
                config, w.target, run_variant(w), int(w.seed)
            )
        ),
        out_dir=lambda w: replicate(w.target, layout.student_dir, w.run, w.seed),
        # no test split: scored on held-out transfer rows (a function of `input`: no rerun trigger)
        test=lambda w, input: f"--test {input.test}" if input.test else "",
    shell:
        "dfkd distill --teacher {input.teacher} --manifest {input.manifest} --data {input.data} --device {params.device}"
        " --features {input.features} {params.test} --params {params.slice:q}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
