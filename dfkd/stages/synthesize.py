"""Stage `synthesize`: images made from the teacher, stored as an ordinary source.

Two jobs, one command (`dfkd synthesize`):
- A synthesised source (kind `impressions`, ...): `count` images, equal numbers per class (or
  per class of `classes`) -> `data/{source}.h5`.
- A class-conditional fill (kind `fill` whose generator is a synthesiser) in transfer set S,
  replicate seed k: it runs Algorithm 1 (`dfkd.stages.balance.assemble`, the set's recipe at seed k)
  on the labels of the sources before it in S, and makes only the rows that leaves short,
  only for the short classes -> `data/sets/S/seed{k}/{source}.h5` (`dfkd.io.layout.set_source`).
  Its synthesis seed is the block's seed + k, as a recipe's is.

The data file holds `images` uint8 [N, C, S, S], `class_targets` int64 [N] (the class each
image was made for), `soft_targets` float32 [N, K] (its sampled target), `teacher_labels`
int64 [N] (the teacher's class of the stored image) and `kl` float32 [N] (KL divergence of the
teacher's softmax at T on the stored image from its target). Provenance: the command, the
config slice, the teacher's sha256 (and the labels read), the seed, and the summary. Beside
it, `{name}.synthesis.json` reports per class the images made, kept and how often the teacher
labels an image as the class it was made for, with images/s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from dfkd.errors import DfkdError
from dfkd.sources.fill import FILL_ONLY_KEYS, fill_default, is_conditional
from dfkd.synthesis import SYNTHESIZERS, get_synthesizer
from dfkd.synthesis.base import SynthesisSpec
from dfkd.synthesis.driver import CountPlan, ShortfallPlan, equal_classes, fingerprint_of, run

GENERATOR_FIXED = ("count", "seed", "classes", "budget")  # decided by the fill, not its generator


# ---------------------------------------------------------------------------- the slice, checked


def check_params(params: Mapping) -> dict:
    """Validate a slice made by `synthesis_slice` or `conditional_slice`; one line per problem."""
    from dfkd.sources import validate_source_config

    missing = [k for k in ("source", "num_classes", "channels", "image_size", "mean", "std") if k not in params]
    if missing or ("block" not in params and "fill" not in params):
        raise DfkdError(f"synthesize --params lacks {missing or ['block or fill']}; pass the slice the workflow builds.")
    name = params["source"]
    raw = params.get("block", params.get("fill"))
    if "block" in params and isinstance(raw, Mapping) and raw.get("kind") not in SYNTHESIZERS:
        raise DfkdError(f"sources.{name}: kind '{raw.get('kind')}' is not made by `dfkd synthesize`; synthesisers: "
                        f"{', '.join(sorted(SYNTHESIZERS))}.")
    try:
        _, block = validate_source_config(raw)
    except DfkdError as exc:
        raise DfkdError(f"sources.{name}: {exc}") from exc
    if "fill" in params:
        return {**dict(params), "fill": _check_conditional(name, raw, block, params)}
    for c in block["classes"] or []:
        if c >= params["num_classes"]:
            raise DfkdError(f"sources.{name}.classes: class {c} does not exist; the target has classes 0..{params['num_classes'] - 1}.")
    return {**dict(params), "block": block}


def _check_conditional(name: str, raw: Mapping, block: dict, params: Mapping) -> dict:
    from dfkd.sources import validate_source_config

    where = f"sources.{name}"
    if not is_conditional(block):
        raise DfkdError(f"{where}: a fill made by `dfkd synthesize` needs a synthesiser generator "
                        f"({', '.join(sorted(SYNTHESIZERS))}); blind generators are drawn by `dfkd fill`.")
    for key in FILL_ONLY_KEYS:
        if key in raw and raw[key] != fill_default(key):
            raise DfkdError(f"{where}.{key}: a fill with generator '{block['generator']['kind']}' does not use it; "
                            f"remove it (the optimisation batch is {where}.generator.batch).")
    for key in GENERATOR_FIXED:
        if key in raw["generator"]:
            raise DfkdError(f"{where}.generator.{key}: remove it; the fill decides it (rows short per class, "
                            f"{where}.seed, {where}.budget).")
    try:
        _, generator = validate_source_config(raw["generator"])
    except DfkdError as exc:
        raise DfkdError(f"{where}.generator: {exc}") from exc
    if block["budget"]["images"] is None and block["budget"]["seconds"] is None:
        raise DfkdError(f"{where}.budget: images and seconds are both null; set at least one limit.")
    recipe = params.get("recipe") or {}
    if not recipe.get("sources"):
        raise DfkdError(f"{where}: a class-conditional fill tops up the sources before it; in transfer set "
                        f"'{params.get('set')}' it comes first. Put it after the sources it fills.")
    if not recipe.get("balanced", True):
        raise DfkdError(f"transfer_sets.{params.get('set')}: an unbalanced set never uses its fill '{name}'; "
                        "set balanced: true or drop the fill.")
    return {**block, "generator": {k: v for k, v in generator.items() if k not in GENERATOR_FIXED}}


# ---------------------------------------------------------------------------- shortfall
def shortfall(params: Mapping, labels: Sequence[Path], total_like: Path | None) -> tuple[np.ndarray, dict]:
    """Rows per class that the set's sources before the fill leave short (Algorithm 1 at the set's seed)."""
    from dfkd.io.artifacts import files_by_source, read_parquet
    from dfkd.stages.balance import LABEL_COLUMNS, assemble

    recipe = params["recipe"]
    named = files_by_source(labels)
    if list(named) != list(recipe["sources"]):
        raise DfkdError(f"synthesize: --labels name sources {list(named)}, but the set's sources before "
                        f"'{params['source']}' are {recipe['sources']}; pass their labels files in recipe order.")
    frames = [(stem, read_parquet(path, required_columns=LABEL_COLUMNS)) for stem, path in named.items()]
    total = recipe.get("total")
    if total is None and total_like is not None:
        total = len(read_parquet(total_like, ["label"]))
    options = {key: recipe.get(key) for key in ("per_class", "classes", "size")}
    _, counts = assemble(frames, params["num_classes"], balanced=True, total=total, seed=recipe["seed"],
                         prefer=recipe.get("prefer", "random"), **options)
    missing = np.maximum(counts["target"].to_numpy() - counts["after"].to_numpy(), 0).astype(np.int64)
    return missing, {"target": counts["target"].tolist(), "before_fill": counts["after"].tolist()}


# ---------------------------------------------------------------------------- the stage
def synthesize_source(teacher: Path, params: Mapping, out: Path, report: Path, labels: Sequence[Path] = (),
                      total_like: Path | None = None, checkpoint_seconds: float = 30.0,
                      on_batch: Callable | None = None, device: str = "auto") -> dict:
    """Run the stage (see the module docstring); return the report."""
    import torch

    from dfkd.io.artifacts import write_h5, write_json
    from dfkd.models import load_model
    from dfkd.io.provenance import file_sha256, make_provenance
    from dfkd.sources.synthesized import settings_of
    from dfkd.device import pick_device

    # 1. Config and teacher (gradients flow to the images only).
    params = check_params(params)
    out, report, teacher = Path(out), Path(report), Path(teacher)
    name, conditional = params["source"], "fill" in params
    device = pick_device(device)
    model, record = load_model(teacher)
    model = model.to(device).eval()
    for weight in model.parameters():
        weight.requires_grad_(False)
    have = (record["in_channels"], record["image_size"], record["num_classes"])
    if have != (params["channels"], params["image_size"], params["num_classes"]):
        raise DfkdError(f"{teacher} takes {have[0]}x{have[1]}x{have[1]} images and has {have[2]} classes; the slice of "
                        f"'{name}' asks {params['channels']}x{params['image_size']}x{params['image_size']} and "
                        f"{params['num_classes']}. Re-train the teacher (snakemake rebuilds it).")
    # the teacher sees what `features` feeds it: the teacher file's mean and std
    spec = SynthesisSpec(params["channels"], params["image_size"], params["num_classes"],
                         tuple(record["mean"]), tuple(record["std"]))

    # 2. The plan: count images over the classes, or the rows the earlier sources leave short.
    inputs: dict[str, Path] = {"teacher": teacher}
    if conditional:
        block = params["fill"]
        settings, synthesizer = dict(block["generator"]), get_synthesizer(block["generator"]["kind"])
        missing, balance = shortfall(params, labels, total_like)
        plan = ShortfallPlan(missing, settings.pop("batch"))
        seed, budget = int(block["seed"]) + int(params["replicate"]), block["budget"]
        inputs.update({f"labels/{Path(p).stem}": Path(p) for p in labels})
    else:
        block = params["block"]
        settings, synthesizer = settings_of(block), get_synthesizer(block["kind"])
        classes = block["classes"] if block["classes"] is not None else list(range(spec.num_classes))
        plan, balance = CountPlan(equal_classes(block["count"], classes), block["batch"]), None
        seed, budget = int(block["seed"]), block["budget"]
    settings.pop("kind", None)

    # 3. Synthesise, batch after batch, resumable.
    fingerprint = fingerprint_of(params, file_sha256(teacher), device.type, plan.describe())
    partial = out.with_name(out.name.removesuffix(".h5") + ".partial.h5")
    state, reason = run(model, spec, synthesizer.synthesize_batch, settings, plan, seed=seed, budget=budget,
                        partial=partial, fingerprint=fingerprint, checkpoint_seconds=checkpoint_seconds,
                        device=device, name=f"synthesize {name}", on_batch=on_batch)
    arrays = state.arrays(spec)
    if len(arrays["images"]) == 0 and not (conditional and reason == "done"):
        raise DfkdError(f"synthesize {name}: kept no images ({reason}); raise the budget of sources.{name}.")

    # 4. The source, then the report; the checkpoint goes last.
    summary = _summary(state, plan, reason, arrays, balance)
    provenance = make_provenance("synthesize", params, inputs=inputs, seed=seed)
    provenance["synthesis"] = summary
    attrs = {"source": name, "kind": "fill" if conditional else block["kind"], "synthesizer": synthesizer.name}
    write_h5(out, {k: arrays[k] for k in ("images", "class_targets", "soft_targets", "teacher_labels", "kl")},
             provenance, attrs)
    payload = {"source": name, "synthesizer": synthesizer.name, "seed": seed, **summary,
               "seconds": round(state.seconds, 3),
               "images_per_second": round(state.made / state.seconds, 3) if state.seconds > 0 else None,
               "seconds_per_1000": round(1000 * state.seconds / state.made, 2) if state.made else None,
               "device": device.type, "torch_threads": torch.get_num_threads()}
    write_json(report, payload, make_provenance("synthesize", params, inputs={**inputs, "data": out}, seed=seed))
    partial.unlink(missing_ok=True)
    return payload


def _summary(state, plan, reason: str, arrays: Mapping[str, np.ndarray], balance: dict | None) -> dict:
    """The deterministic part of the report (it goes into the data file's provenance too)."""
    agree = arrays["teacher_labels"] == arrays["class_targets"]
    classes = []
    for c in range(state.num_classes):
        rows = arrays["class_targets"] == c
        entry = {"class": c, "made": int(state.asked[c]), "kept": int(state.kept[c]),
                 "made_for_agreement": round(float(state.hits[c]) / state.asked[c], 4) if state.asked[c] else None,
                 "mean_kl": round(float(arrays["kl"][rows].mean()), 4) if rows.any() else None}
        if isinstance(plan, ShortfallPlan):
            entry.update(missing=int(plan.missing[c]), full=bool(state.kept[c] >= plan.missing[c]))
        classes.append(entry)
    summary = {
        "stopped": reason, "made": int(state.made), "kept": int(len(arrays["images"])), "batches": int(state.batches),
        # over the stored rows: how often the teacher's label is the class the image was made for
        "made_for_agreement": round(float(agree.mean()), 4) if len(agree) else None,
        "mean_kl": round(float(arrays["kl"].mean()), 4) if len(agree) else None,
        "classes": classes, **plan.describe(),
    }
    if balance is not None:
        summary["balance"] = balance
        summary["short_classes"] = [e["class"] for e in classes if not e["full"]]
    return summary
