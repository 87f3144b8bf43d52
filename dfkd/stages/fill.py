"""Stage `fill`: draw from a generator until every teacher class holds `per_class` rows.

Input: `teacher/model.pt` and a `fill` source block (its config slice, `fill_slice`). Output:
- `data/{source}.h5`: an ordinary source (uint8 `images` [N, C, S, S] at the target's spec,
  attrs `source`, `kind` = "fill"), plus `teacher_labels` int64 [N], the teacher's class of
  each kept row (not ground truth, so not `labels`). Its provenance holds the slice (the
  generator's arguments, budget, seed), the teacher's hash and `fill`: per class the rows kept,
  the teacher's hits and the draws it took to fill, and the budget used.
- `data/{source}.fill.json`: the fill report: the same, plus seconds and images/s.

How it draws (deterministic for a given teacher, slice and device):
1. Batch b (`batch` images) is cut into sub-batches of at most GENERATOR_CHUNK images. A
   generator seeded by (seed, b) picks each sub-batch's bin of every varied argument, a value
   in that bin and the sub-batch's own seed; the sub-batch is then exactly the images that a
   source block of the generator's kind, with those arguments, count and seed, makes.
2. The teacher labels the batch on the device, in chunks, as the `features` stage does. Rows
   are kept in draw order while their class holds fewer than `per_class`.
3. It stops when every class is full or the budget (images drawn, seconds) is spent; a class
   still short is reported, with the draws spent.

Varying its own arguments to reach rare classes (a seeded bandit). Each varied argument's
[low, high] is cut into `bins` equal bins: a number is drawn uniformly in its bin, an integer
among the integers of its bin, an interval argument (patches' `scale`) takes the bin as its
[min, max]. Each bin keeps two sums: the images it drew, and its yield, the rows it drew of
classes that were short when the batch began, each weighted by the share of its class still
missing (the rarest class counts most). Both decay by MEMORY per batch, so the bandit follows
the classes as they fill. A bin is picked with probability (1 - explore) * s / sum(s) +
explore / bins, where s = (yield + 1) / (images + 1): untried bins look good and get tried.
Defaults (`vary: null`): noise varies `resolution` (2 .. the target's size) and, when
Gaussian, `mean` and `std`; patches vary `scale` and polarity (`invert`; crop positions are
uniform over each photo anyway); shapes vary `max_shapes`, strokes `max_strokes`.

Resumable: every `checkpoint_seconds` the kept rows and the whole draw state (batch index,
counts, bandit sums) are written atomically to `data/{source}.partial.h5`. A re-run with the
same teacher, slice and device continues from it to the same bytes as an uninterrupted run
(a `seconds` budget aside: where it ends depends on the machine).

Over 400 lines because the draw, the bandit, the kept rows and their resumable state are one
state machine; the config slice it reads is `dfkd.slices.fill_slice`.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from dfkd.errors import DfkdError
from dfkd.io.artifacts import read_partial
from dfkd.io.progress import LINE_SECONDS, Every
from dfkd.sources import TargetSpec, get_source_kind, validate_source_config
from dfkd.sources.base import GENERATOR_CHUNK, generate_in_chunks

MEMORY = 0.8  # per-batch decay of the bandit's sums
INFER_CHUNK = 2048  # images per teacher forward pass (the features stage's default batch)
STATE_VERSION = 1


# ---------------------------------------------------------------------------- the slice, checked


def check_fill_params(params: Mapping) -> dict:
    """Validate a fill slice (as `fill_slice` makes it); return it with defaults filled."""
    missing = [k for k in ("fill", "per_class", "num_classes", "channels", "image_size") if k not in params]
    if missing:
        raise DfkdError(f"fill --params lacks {missing}; pass the slice that rules/fill.smk builds.")
    name = params.get("source", "fill")
    try:
        _, block = validate_source_config(params["fill"])
    except DfkdError as exc:
        raise DfkdError(f"sources.{name}: {exc}") from exc
    if block["kind"] != "fill":
        raise DfkdError(f"sources.{name}: kind is {block['kind']!r}; the fill stage needs kind 'fill'.")
    generator = block["generator"]
    from dfkd.synthesis import SYNTHESIZERS

    if generator["kind"] in SYNTHESIZERS:
        raise DfkdError(
            f"sources.{name}: a fill with generator '{generator['kind']}' makes only what the sources before it "
            "leave short, per transfer set and seed: `dfkd synthesize` (rule synthesize_fill) makes it, not `dfkd fill`."
        )
    for key in ("count", "seed"):
        if key in generator:
            raise DfkdError(
                f"sources.{name}.generator.{key}: remove it; a fill source draws until its classes "
                f"fill (budget) from its own `seed`."
            )
    try:
        _, filled = validate_source_config(generator)
    except DfkdError as exc:
        raise DfkdError(f"sources.{name}.generator: {exc}") from exc
    budget = block["budget"]
    if budget["images"] is None and budget["seconds"] is None:
        raise DfkdError(f"sources.{name}.budget: images and seconds are both null; set at least one limit.")
    # count and seed are the stage's to set: keep them out of the slice's record
    return {**dict(params), "source": name, "fill": {**block, "generator": _block_of(filled)}}


# ---------------------------------------------------------------------------- generator
class Generator:
    """One generator kind at a target's spec: `draw(arguments, seed, n)` makes n images."""

    def __init__(self, args: dict, spec: TargetSpec):
        self.kind = get_source_kind(args["kind"])
        self.args, self.spec = dict(args), spec
        self.pyramids = None
        if self.kind.name == "patches":  # decode the photos once, not once per sub-batch
            from dfkd.sources.patches import photo_pyramids

            self.pyramids = photo_pyramids(self.args, spec)

    def input_files(self) -> list[Path]:
        return list(self.kind.input_files(self.args, None))

    def draw(self, overrides: Mapping[str, Any], seed: int, n: int) -> np.ndarray:
        args = {**self.args, **overrides, "count": n, "seed": seed}
        if self.pyramids is None:
            return self.kind.load(args, self.spec, None).images
        from dfkd.sources.patches import make_patches

        return generate_in_chunks(
            n, seed, lambda rng, m, keep: make_patches(rng, m, keep, args, self.spec, self.pyramids)
        )


def default_vary(generator: Mapping, spec: TargetSpec) -> dict[str, list[float]]:
    kind = generator["kind"]
    if kind == "noise":
        vary = {"resolution": [2, spec.image_size]}
        if generator["distribution"] == "gaussian":
            vary.update({"mean": [0.0, 1.0], "std": [0.05, 0.6]})
        return vary
    if kind == "patches":
        return {"scale": [0.02, 0.6], "invert": [0.0, 1.0]}
    if kind == "shapes":
        low = max(1, generator["min_shapes"])
        return {"max_shapes": [low, max(low, 8)]}
    if kind == "strokes":
        return {"max_strokes": [1, 8]}
    return {}


@dataclass(frozen=True)
class Knob:
    """One varied argument: its [low, high] cut into bins."""

    name: str
    kind: str  # "number", "integer" or "interval"
    low: float
    high: float
    bins: int

    def bounds(self, b: int) -> tuple[float, float]:
        if self.kind == "integer":
            span = int(self.high) - int(self.low) + 1
            start = int(self.low) + (b * span) // self.bins
            return start, int(self.low) + ((b + 1) * span) // self.bins - 1
        width = (self.high - self.low) / self.bins
        return self.low + b * width, self.low + (b + 1) * width

    def value(self, b: int, rng: np.random.Generator):
        low, high = self.bounds(b)
        if self.kind == "integer":
            return int(rng.integers(low, high + 1))
        if self.kind == "interval":
            return [float(low), float(high)]
        return float(rng.uniform(low, high))


def make_knobs(block: Mapping, generator: Generator, name: str) -> list[Knob]:
    """The varied arguments of a fill block, checked against the generator kind's schema."""
    vary = block["vary"] if block["vary"] is not None else default_vary(generator.args, generator.spec)
    knobs = []
    for arg, (low, high) in sorted(vary.items()):
        prop = generator.kind.properties.get(arg)
        where = f"sources.{name}.vary.{arg}"
        if prop is None or arg in ("count", "seed"):
            numeric = [k for k, p in generator.kind.properties.items() if _knob_kind(p) and k not in ("count", "seed")]
            raise DfkdError(f"{where}: '{generator.kind.name}' has no argument to vary by that name; it can vary {numeric}.")
        kind = _knob_kind(prop)
        if kind is None:
            raise DfkdError(f"{where}: '{arg}' is not a number, an integer or a [min, max] interval; it cannot be varied.")
        if low > high:
            raise DfkdError(f"{where}: [{low}, {high}] has low > high; write it as [low, high].")
        if kind == "integer" and (low != int(low) or high != int(high)):
            raise DfkdError(f"{where}: '{arg}' is an integer; give integer bounds, not [{low}, {high}].")
        bins = min(block["bins"], int(high) - int(low) + 1) if kind == "integer" else block["bins"]
        knob = Knob(arg, kind, float(low), float(high), bins)
        for b in (0, bins - 1):  # the extreme values must be valid arguments of the kind
            edge = knob.bounds(b)
            value = list(edge) if kind == "interval" else edge[b > 0]
            try:
                validate_source_config({**_block_of(generator.args), arg: int(value) if kind == "integer" else value})
            except DfkdError as exc:
                raise DfkdError(f"{where}: [{low}, {high}] leaves the argument's allowed range ({exc}).") from None
        knobs.append(knob)
    return knobs


def _knob_kind(prop: Mapping) -> str | None:
    types = prop.get("type")
    types = set(types if isinstance(types, list) else [types])
    if "integer" in types:
        return "integer"
    if "number" in types:
        return "number"
    if "array" in types and prop.get("minItems") == 2 and prop.get("maxItems") == 2:
        return "interval"
    return None


def _block_of(args: Mapping) -> dict:
    return {k: v for k, v in args.items() if k not in ("count", "seed")}


# ---------------------------------------------------------------------------- state
@dataclass
class FillState:
    """Everything a resumed run needs: counts, bandit sums, the kept rows, time spent."""

    num_classes: int
    knobs: list[Knob]
    batches: int = 0
    drawn: int = 0
    seconds: float = 0.0
    generate_seconds: float = 0.0
    teacher_seconds: float = 0.0
    kept: np.ndarray = None  # (K,) rows kept per class
    hits: np.ndarray = None  # (K,) teacher outputs per class over every draw
    filled_at: np.ndarray = None  # (K,) draws when the class became full (-1: not yet)
    yields: list = None  # per knob: (bins,) decayed yield
    draws: list = None  # per knob: (bins,) decayed images drawn
    images: list = field(default_factory=list)  # kept rows, uint8 (n, C, S, S) each
    labels: list = field(default_factory=list)  # their teacher classes, int64 (n,)

    def __post_init__(self):
        k = self.num_classes
        self.kept = np.zeros(k, np.int64) if self.kept is None else self.kept
        self.hits = np.zeros(k, np.int64) if self.hits is None else self.hits
        self.filled_at = np.full(k, -1, np.int64) if self.filled_at is None else self.filled_at
        self.yields = [np.zeros(knob.bins) for knob in self.knobs] if self.yields is None else self.yields
        self.draws = [np.zeros(knob.bins) for knob in self.knobs] if self.draws is None else self.draws

    def to_json(self) -> str:
        return json.dumps({
            "version": STATE_VERSION, "batches": self.batches, "drawn": self.drawn,
            "seconds": self.seconds, "generate_seconds": self.generate_seconds,
            "teacher_seconds": self.teacher_seconds, "kept": self.kept.tolist(),
            "hits": self.hits.tolist(), "filled_at": self.filled_at.tolist(),
            "yields": [y.tolist() for y in self.yields], "draws": [d.tolist() for d in self.draws],
        })  # floats print as repr: they read back to the same bits

    @classmethod
    def from_json(cls, text: str, num_classes: int, knobs: list[Knob], images, labels) -> "FillState":
        raw = json.loads(text)
        if raw.get("version") != STATE_VERSION:
            raise ValueError(f"state version {raw.get('version')}")
        return cls(
            num_classes, knobs, raw["batches"], raw["drawn"], raw["seconds"], raw["generate_seconds"],
            raw["teacher_seconds"], np.array(raw["kept"], np.int64), np.array(raw["hits"], np.int64),
            np.array(raw["filled_at"], np.int64), [np.array(y, np.float64) for y in raw["yields"]],
            [np.array(d, np.float64) for d in raw["draws"]], [images], [labels],
        )

    def probabilities(self, explore: float) -> list[np.ndarray]:
        out = []
        for yields, draws in zip(self.yields, self.draws):
            score = (yields + 1.0) / (draws + 1.0)
            out.append((1.0 - explore) * score / score.sum() + explore / len(score))
        return out

    def kept_arrays(self, spec: TargetSpec) -> tuple[np.ndarray, np.ndarray]:
        if not self.images:
            return np.empty((0, spec.channels, spec.image_size, spec.image_size), np.uint8), np.empty(0, np.int64)
        return np.concatenate(self.images), np.concatenate(self.labels)


# ---------------------------------------------------------------------------- one batch
def draw_batch(generator: Generator, knobs: list[Knob], state: FillState, seed: int, n: int,
               explore: float) -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
    """Images of batch `state.batches` (n of them) and, per sub-batch, (size, bin per knob)."""
    rng = np.random.default_rng([seed, state.batches])
    sizes = [min(GENERATOR_CHUNK, n - start) for start in range(0, n, GENERATOR_CHUNK)]
    probabilities = state.probabilities(explore)
    picks = [[int(b) for b in rng.choice(knob.bins, size=len(sizes), p=p)] for knob, p in zip(knobs, probabilities)]
    parts, plan = [], []
    for j, size in enumerate(sizes):
        bins = [picks[k][j] for k in range(len(knobs))]
        overrides = {knob.name: knob.value(b, rng) for knob, b in zip(knobs, bins)}
        sub_seed = int(rng.integers(0, 2**62))
        parts.append(generator.draw(overrides, sub_seed, size))
        plan.append((size, bins))
    return np.concatenate(parts), plan


def teacher_classes(model, record: Mapping, images: np.ndarray, device) -> np.ndarray:
    """The teacher's class of each uint8 image (N, C, S, S), computed as `features` does."""
    import torch

    from dfkd.training import normalize

    out = np.empty(len(images), np.int64)
    with torch.no_grad():
        for start in range(0, len(images), INFER_CHUNK):
            chunk = torch.from_numpy(images[start : start + INFER_CHUNK]).to(device)  # (B, C, H, W) uint8
            logits = model.head(model.features(normalize(chunk, record["mean"], record["std"])))  # (B, K)
            if not torch.isfinite(logits).all():
                raise DfkdError("the teacher's logits hold NaN or inf values; the teacher is broken. Re-train it.")
            out[start : start + len(chunk)] = logits.float().argmax(1).cpu().numpy()
    return out


def take(state: FillState, images: np.ndarray, classes: np.ndarray, plan, per_class: int) -> None:
    """Keep rows of still-short classes in draw order; update counts and the bandit's sums."""
    # 1. The bandit's yield: rows of classes short at the batch's start, weighted by the share missing.
    missing = np.maximum(per_class - state.kept, 0) / per_class  # (K,)
    weight = missing[classes]  # (n,)
    for k in range(len(state.knobs)):
        state.yields[k] *= MEMORY
        state.draws[k] *= MEMORY
    start = 0
    for size, bins in plan:
        gained = float(weight[start : start + size].sum())
        for k, b in enumerate(bins):
            state.yields[k][b] += gained
            state.draws[k][b] += size
        start += size
    # 2. Keep in draw order: a row's rank within its class in this batch decides.
    order = np.argsort(classes, kind="stable")
    ranks = np.empty(len(classes), np.int64)
    counts = np.bincount(classes, minlength=state.num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ranks[order] = np.arange(len(classes)) - np.repeat(starts, counts)
    keep = state.kept[classes] + ranks < per_class
    # 3. When each class became full: the draw (1-based) of its per_class-th row.
    became_full = np.flatnonzero(keep & (state.kept[classes] + ranks == per_class - 1))
    state.filled_at[classes[became_full]] = state.drawn + became_full + 1
    state.kept += np.bincount(classes[keep], minlength=state.num_classes)
    state.hits += counts
    state.drawn += len(classes)
    state.batches += 1
    if keep.any():
        state.images.append(images[keep])
        state.labels.append(classes[keep])


def stop_reason(state: FillState, per_class: int, budget: Mapping) -> str | None:
    if (state.kept >= per_class).all():
        return "full"
    if budget["images"] is not None and state.drawn >= budget["images"]:
        return "images"
    if budget["seconds"] is not None and state.seconds >= budget["seconds"]:
        return "seconds"
    return None


# ---------------------------------------------------------------------------- the stage
def partial_path(out: Path) -> Path:
    """The checkpoint beside the output: data/{source}.partial.h5."""
    return out.with_name(out.name.removesuffix(".h5") + ".partial.h5")


def fill_source(teacher: Path, params: Mapping, out: Path, report: Path, checkpoint_seconds: float = 30.0,
                on_batch: Callable[[FillState], None] | None = None, device: str = "auto") -> dict:
    """Run the fill stage; return the report. `on_batch(state)` runs after each batch (tests)."""
    from dfkd.io.artifacts import write_h5, write_json
    from dfkd.models import load_model
    from dfkd.stages.prepare import raw_inputs
    from dfkd.io.provenance import file_sha256, make_provenance
    from dfkd.device import pick_device

    # 1. Config, teacher, generator, bandit.
    params = check_fill_params(params)
    out, report, teacher = Path(out), Path(report), Path(teacher)
    name, block, per_class = params["source"], params["fill"], params["per_class"]
    spec = TargetSpec(channels=params["channels"], image_size=params["image_size"])
    device = pick_device(device)
    model, record = load_model(teacher)
    model = model.to(device).eval()
    have = (record["in_channels"], record["image_size"], record["num_classes"])
    if have != (spec.channels, spec.image_size, params["num_classes"]):
        raise DfkdError(
            f"{teacher} takes {have[0]}x{have[1]}x{have[1]} images and has {have[2]} classes; the fill "
            f"slice asks {spec.channels}x{spec.image_size}x{spec.image_size} and {params['num_classes']}. "
            "Re-train the teacher (snakemake rebuilds it)."
        )
    try:
        generator = Generator(block["generator"], spec)
    except DfkdError as exc:
        raise DfkdError(f"sources.{name}.generator: {exc}") from exc
    knobs = make_knobs(block, generator, name)
    teacher_sha = file_sha256(teacher)
    fingerprint = hashlib.sha256(
        json.dumps([params, teacher_sha, device.type], sort_keys=True).encode()
    ).hexdigest()
    # 2. Resume from the checkpoint when it belongs to this very job.
    partial = partial_path(out)
    state = _resume(partial, fingerprint, params["num_classes"], knobs) or FillState(params["num_classes"], knobs)
    if state.batches:
        _say(f"fill {name}: resumed at batch {state.batches} ({state.drawn:,} drawn) from {partial}")
    # 3. Draw, label, keep, until full or out of budget.
    session, seconds_before = time.perf_counter(), state.seconds
    save_due, line_due = Every(checkpoint_seconds), Every(LINE_SECONDS, first=True)
    while (reason := stop_reason(state, per_class, block["budget"])) is None:
        n = block["batch"]
        if block["budget"]["images"] is not None:
            n = min(n, block["budget"]["images"] - state.drawn)
        t0 = time.perf_counter()
        try:
            images, plan = draw_batch(generator, knobs, state, block["seed"], n, block["explore"])
        except DfkdError as exc:
            raise DfkdError(f"sources.{name}.generator: {exc}") from exc
        t1 = time.perf_counter()
        classes = teacher_classes(model, record, images, device)
        t2 = time.perf_counter()
        take(state, images, classes, plan, per_class)
        state.generate_seconds += t1 - t0
        state.teacher_seconds += t2 - t1
        now = time.perf_counter()
        state.seconds = seconds_before + (now - session)
        if save_due(now):
            _save(partial, state, fingerprint, spec)
        if line_due(now):
            _say(_progress_line(name, state, per_class))
        if on_batch is not None:
            on_batch(state)
    # 4. The source artifact, then the report; the checkpoint goes last.
    images, labels = state.kept_arrays(spec)
    if len(images) == 0:
        raise DfkdError(
            f"fill {name}: kept no rows after {state.drawn:,} draws ({reason}); raise sources.{name}.budget "
            "or pick another generator."
        )
    summary = _summary(state, per_class, reason, block["budget"])
    provenance = make_provenance(
        "fill", params, inputs={"teacher": teacher, **raw_inputs(generator.input_files())[0]}, seed=block["seed"]
    )
    provenance["fill"] = summary
    attrs = {"source": name, "kind": "fill", "generator": block["generator"]["kind"]}
    write_h5(out, {"images": images, "teacher_labels": labels}, provenance, attrs)
    payload = _report(name, params, state, summary, knobs, device.type)
    write_json(report, payload, make_provenance("fill", params, inputs={"teacher": teacher, "data": out}, seed=block["seed"]))
    partial.unlink(missing_ok=True)
    _say(_progress_line(name, state, per_class) + f"; stopped: {reason}")
    return payload


def _summary(state: FillState, per_class: int, reason: str, budget: Mapping) -> dict:
    """The deterministic part of the report (it goes into the data file's provenance too)."""
    classes = [
        {
            "class": c,
            "kept": int(state.kept[c]),
            "hits": int(state.hits[c]),
            "draws": int(state.filled_at[c]) if state.filled_at[c] >= 0 else int(state.drawn),
            "full": bool(state.kept[c] >= per_class),
        }
        for c in range(state.num_classes)
    ]
    return {
        "per_class": per_class,
        "stopped": reason,
        "drawn": int(state.drawn),
        "batches": int(state.batches),
        "budget": dict(budget),
        "classes": classes,
        "short_classes": [c["class"] for c in classes if not c["full"]],
    }


def _report(name: str, params: Mapping, state: FillState, summary: dict, knobs: list[Knob], device: str) -> dict:
    rate = lambda n, s: round(n / s, 1) if s > 0 else None  # noqa: E731
    probabilities = state.probabilities(params["fill"]["explore"])
    return {
        "source": name,
        "generator": params["fill"]["generator"],
        "seed": params["fill"]["seed"],
        **summary,
        "seconds": round(state.seconds, 3),
        "images_per_second": rate(state.drawn, state.seconds),
        "teacher_images_per_second": rate(state.drawn, state.teacher_seconds),
        "generator_images_per_second": rate(state.drawn, state.generate_seconds),
        "device": device,
        "vary": {
            knob.name: {
                "bins": [list(knob.bounds(b)) for b in range(knob.bins)],
                "probability": [round(float(p), 4) for p in probs],
            }
            for knob, probs in zip(knobs, probabilities)
        },
    }


def _save(partial: Path, state: FillState, fingerprint: str, spec: TargetSpec) -> None:
    from dfkd.io.artifacts import write_h5

    images, labels = state.kept_arrays(spec)
    state.images, state.labels = ([images], [labels]) if len(images) else ([], [])
    attrs = {"fill_state": state.to_json(), "fill_fingerprint": fingerprint}
    write_h5(partial, {"images": images, "teacher_labels": labels}, None, attrs)


def _resume(partial: Path, fingerprint: str, num_classes: int, knobs: list[Knob]) -> FillState | None:
    """The checkpointed state, or None (no checkpoint, another job's, or unreadable)."""
    def read(handle) -> FillState:
        images, labels = handle["images"][()], handle["teacher_labels"][()]
        state = FillState.from_json(handle.attrs["fill_state"], num_classes, knobs, images, labels)
        if len(images) == 0:
            state.images, state.labels = [], []
        return state

    return read_partial(partial, "fill_fingerprint", fingerprint, read, "fill")


def _progress_line(name: str, state: FillState, per_class: int) -> str:
    full = int((state.kept >= per_class).sum())
    rarest = int(np.argmin(state.kept))
    rate = state.drawn / state.seconds if state.seconds > 0 else 0.0
    return (
        f"fill {name}: batch {state.batches}, {state.drawn:,} drawn, {full}/{state.num_classes} classes "
        f"full, rarest class {rarest} at {int(state.kept[rarest]):,}/{per_class:,}, {rate:,.0f} images/s"
    )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
