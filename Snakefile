# dfkd: data-free knowledge distillation with arbitrary, class-balanced transfer sets.
# This file only wires: version, config, report, the stage rules in pipeline order, `all`.
from snakemake.utils import min_version

min_version("8.20")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/prepare.smk"
include: "rules/fill.smk"
include: "rules/synthesize.smk"
include: "rules/teacher.smk"
include: "rules/features.smk"
include: "rules/labels.smk"
include: "rules/assemble.smk"
include: "rules/distill.smk"
include: "rules/distance.smk"
include: "rules/quality.smk"
include: "rules/report.smk"
include: "rules/study.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
