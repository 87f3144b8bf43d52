# Sources made from the teacher (dfkd.synthesis): a synthesised source (kind `impressions`) once
# per target, as data/{source}.h5; and a class-conditional fill (kind `fill` whose generator is a
# synthesiser), which makes only the rows its set's earlier sources leave short, so once per set
# and seed, as data/sets/{set}/seed{seed}/{source}.h5. Both are ordinary sources for features,
# labels and assembly (set_files names the per-set files).


ruleorder: synthesize > prepare


rule synthesize:
    """Images synthesised from the teacher, equal numbers per class: an ordinary source."""
    input:
        teacher=path("{target}", "teacher", "model.pt"),
    output:
        data=path("{target}", "data", "{source}.h5"),
        report=path("{target}", "data", "{source}.synthesis.json"),
    log:
        path("{target}", "logs", "synthesize/{source}.log"),
    benchmark:
        path("{target}", "benchmarks", "synthesize/{source}.tsv")
    wildcard_constraints:
        source=dfkd_slices.pattern(dfkd_slices.synthesized_sources(config)),
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=600,
    params:
        slice=as_json_param(
            lambda w: dfkd_slices.synthesis_slice(config, w.target, w.source)
        ),
    shell:
        "dfkd synthesize --teacher {input.teacher} --params {params.slice:q} --out {output.data}"
        " --report {output.report} --threads {threads} > {log} 2>&1"


rule synthesize_fill:
    """The rows a set's earlier sources leave short (one seed), synthesised from the teacher."""
    input:
        teacher=path("{target}", "teacher", "model.pt"),
        labels=lambda w: [
            path(w.target, "labels", f"{stem}.parquet") for stem in sources_before(w)
        ],
        # the default total is the training set's size, as in `assemble`
        train=split_file("labels", "train", ".parquet"),
    output:
        data=path("{target}", "data", "sets/{set}/seed{seed}/{source}.h5"),
        report=path("{target}", "data", "sets/{set}/seed{seed}/{source}.synthesis.json"),
    log:
        path("{target}", "logs", "synthesize/{set}/seed{seed}/{source}.log"),
    benchmark:
        path("{target}", "benchmarks", "synthesize/{set}/seed{seed}/{source}.tsv")
    wildcard_constraints:
        source=dfkd_slices.pattern(dfkd_slices.conditional_sources(config)),
    conda:
        "../envs/dfkd.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=600,
    params:
        slice=as_json_param(
            lambda w: dfkd_slices.conditional_slice(
                config, w.target, w.set, int(w.seed), w.source
            )
        ),
        total_like=lambda w, input: (
            f"--total-like {input.train}" if input.train else ""
        ),
    shell:
        "dfkd synthesize --teacher {input.teacher} --params {params.slice:q} --labels {input.labels}"
        " {params.total_like} --out {output.data} --report {output.report} --threads {threads} > {log} 2>&1"
