"""The workflow's stages, one module each, in pipeline order: prepare, fill, synthesize, teacher,
features, labels, balance (Algorithm 1), distill, hausdorff and distance, quality (data-free
scores and distances; collapse, its one-line diagnosis). Each is one Snakemake rule, one
`dfkd <stage>` command and one tested function that takes paths, a config slice and a device.
`neighbours` is the exact nearest-neighbour engine that hausdorff and quality share."""
