# Transfer-set quality (issue #15): data-free scores and training-data distances per set, and
# the `quality` table that ranks them against the students' mean accuracy.


rule coverage_radii:
    """Each training row's distance to its 5th nearest other training row: coverage's ball radii,
    an O(N^2 D) search that depends on the training features alone, so once per target.
    """
    input:
        path("{target}", "features", "train.h5"),
    output:
        path("{target}", "quality", "coverage_radii.h5"),
    log:
        path("{target}", "logs", "quality/coverage_radii.log"),
    benchmark:
        path("{target}", "benchmarks", "quality/coverage_radii.tsv")
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "dfkd coverage-radii --train-features {input} --out {output} --threads {threads} > {log} 2>&1"


rule quality:
    """Data-free scores of a transfer set (its first seed's rows) and its distances to the training features."""
    input:
        manifest=lambda w: replicate(w.target, layout.manifest, w.set, SEEDS[0]),
        labels=set_files("labels", ".parquet"),
        features=set_files("features", ".h5"),
        train=split_file("features", "train", ".h5"),
        radii=lambda w: (
            [path(w.target, "quality", "coverage_radii.h5")]
            if has_split(w.target, "train")
            else []
        ),
    output:
        path("{target}", "quality", "{set}.json"),
    log:
        path("{target}", "logs", "quality/{set}.log"),
    benchmark:
        path("{target}", "benchmarks", "quality/{set}.tsv")
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        slice=as_json_param(
            lambda w: dfkd_slices.quality_slice(config, w.target, w.set)
        ),
        # no train split: data-free scores only (a function of `input`: no rerun trigger)
        train=lambda w, input: (
            f"--train-features {input.train} --train-radii {input.radii}"
            if input.train
            else ""
        ),
    shell:
        "dfkd quality --manifest {input.manifest} --labels {input.labels} --features {input.features}"
        " --params {params.slice:q} {params.train} --out {output} --threads {threads} > {log} 2>&1"


rule quality_table:
    """What makes a better transfer set? Each score's rank correlation with mean student accuracy."""
    input:
        quality=lambda w: [
            path(w.target, "quality", f"{s}.json")
            for s in dict.fromkeys(r["set"] for r in quality_runs(w.target))
        ],
        students=lambda w: [
            replicate(
                w.target,
                layout.student_metrics,
                layout.run_name(r["set"], r["variant"]),
                k,
            )
            for r in quality_runs(w.target)
            for k in SEEDS
        ],
    output:
        csv=report(
            path("{target}", "tables", "quality.csv"),
            caption="../report/quality_table.rst",
            category="Transfer-set quality",
            labels={"target": "{target}", "table": "quality"},
        ),
        md=path("{target}", "tables", "quality.md"),
        json=path("{target}", "tables", "quality.json"),
        tex=path("{target}", "tables", "quality.tex"),
        figures=report(
            expand(
                path("{{target}}", "figures", "quality_{metric}.png"),
                metric=QUALITY_METRICS,
            ),
            caption="../report/quality_figure.rst",
            category="Transfer-set quality",
            labels={"target": "{target}", "figure": "quality scatter"},
        ),
    log:
        path("{target}", "logs", "tables/quality.log"),
    benchmark:
        path("{target}", "benchmarks", "tables/quality.tsv")
    conda:
        "../envs/dfkd.yaml"
    params:
        slice=as_json_param(
            lambda w: {
                "target": w.target,
                "seeds": SEEDS,
                "runs": quality_runs(w.target),
            }
        ),
        target_dir=lambda w: path(w.target, ""),
        figures_dir=lambda w: path(w.target, "figures"),
    shell:
        "dfkd quality-table --target-dir {params.target_dir} --params {params.slice:q}"
        " --out-csv {output.csv} --out-md {output.md} --out-json {output.json} --out-tex {output.tex}"
        " --figures-dir {params.figures_dir} > {log} 2>&1"
