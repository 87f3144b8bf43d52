"""The batched, resumable loop every synthesiser runs in: plan a batch, make it, label it, keep it.

A `Plan` says which classes the next batch is made for and which of its rows to keep:
- `CountPlan`: a fixed list of classes (an `impressions` source: count images, equal per class,
  the classes in turns so that every batch mixes them); every row is kept.
- `ShortfallPlan`: `missing[c]` rows per class (a class-conditional fill). Each batch asks for
  the rows still missing, class by class; a row is kept when the teacher labels its stored
  uint8 image as a class still short (in row order), so the output holds at most `missing[c]`
  rows of each class c and none of the others. A class is given up after `tries x missing[c]`
  images were made for it (a teacher that never outputs it).

Batch b is made with a CPU torch.Generator seeded by (seed, b) alone, so a batch is the same
whatever ran before it. The teacher labels each batch's stored uint8 images as `features`
does (`dfkd.training.normalize`), and the KL divergence of its softmax at T from each row's
target is recorded. Every `checkpoint_seconds` the kept rows and the loop's state are written
atomically to `{out}.partial.h5`; a re-run with the same teacher, settings and device resumes
from it to the same bytes as an uninterrupted run (a `seconds` budget aside).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from dfkd.errors import DfkdError
from dfkd.io.artifacts import read_partial
from dfkd.io.progress import LINE_SECONDS, Every
from dfkd.synthesis.base import SynthesisSpec

STATE_VERSION = 1
ARRAYS = ("images", "class_targets", "soft_targets", "teacher_labels", "kl")


# ---------------------------------------------------------------------------- plans
def interleave(classes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """int64: counts[i] of classes[i] each, in turns (c0, c1, ..., c0, c1, ...), so that every batch
    mixes the classes (DeepInversion matches BatchNorm statistics over a batch: see inversion.py)."""
    made_for = np.repeat(np.asarray(classes, np.int64), counts)
    rank = np.concatenate([np.arange(n) for n in counts]) if len(counts) else np.zeros(0, np.int64)
    return made_for[np.lexsort((made_for, rank))]


def equal_classes(count: int, classes: list[int]) -> np.ndarray:
    """int64 [count]: `count` images over `classes`, equal numbers (the first ones get the remainder), in turns."""
    share, extra = divmod(count, len(classes))
    return interleave(np.asarray(classes, np.int64), np.array([share + (i < extra) for i in range(len(classes))]))


@dataclass
class CountPlan:
    """Make images for a fixed list of classes, `batch` at a time; keep every row."""

    classes: np.ndarray  # int64 [count]
    batch: int

    def next_classes(self, state: "SynthesisState") -> np.ndarray:
        return self.classes[state.made : state.made + self.batch]

    def keep(self, state: "SynthesisState", made_for: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return np.ones(len(made_for), bool)

    def describe(self) -> dict:
        return {"plan": "count", "count": int(len(self.classes)), "batch": self.batch}


@dataclass
class ShortfallPlan:
    """Make `missing[c]` rows per class c, as the teacher labels them; nothing for other classes."""

    missing: np.ndarray  # int64 [K]
    batch: int
    tries: int = 4

    def remaining(self, state: "SynthesisState") -> np.ndarray:
        left = np.maximum(self.missing - state.kept, 0)
        left[state.asked >= self.tries * self.missing] = 0  # given up: the teacher does not make it
        return left

    def next_classes(self, state: "SynthesisState") -> np.ndarray:
        left = self.remaining(state)
        return interleave(np.arange(len(left)), left)[: self.batch]

    def keep(self, state: "SynthesisState", made_for: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Rows whose teacher label is a class still short, in row order (a row's rank in its class decides)."""
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=len(self.missing))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        ranks = np.empty(len(labels), np.int64)
        ranks[order] = np.arange(len(labels)) - np.repeat(starts, counts)
        return state.kept[labels] + ranks < self.missing[labels]

    def describe(self) -> dict:
        return {"plan": "shortfall", "missing": self.missing.tolist(), "batch": self.batch, "tries": self.tries}


# ---------------------------------------------------------------------------- state
@dataclass
class SynthesisState:
    """Everything a resumed run needs: what was made, kept and spent."""

    num_classes: int
    batches: int = 0
    made: int = 0  # images synthesised (kept or not)
    seconds: float = 0.0
    asked: np.ndarray = None  # (K,) images made for each class
    hits: np.ndarray = None  # (K,) of those, the teacher labels as that class
    kept: np.ndarray = None  # (K,) kept rows by teacher label
    parts: dict = field(default_factory=lambda: {name: [] for name in ARRAYS})

    def __post_init__(self):
        k = self.num_classes
        self.asked = np.zeros(k, np.int64) if self.asked is None else self.asked
        self.hits = np.zeros(k, np.int64) if self.hits is None else self.hits
        self.kept = np.zeros(k, np.int64) if self.kept is None else self.kept

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "batches": self.batches, "made": self.made,
                           "seconds": self.seconds, "asked": self.asked.tolist(), "hits": self.hits.tolist(),
                           "kept": self.kept.tolist()})

    @classmethod
    def from_json(cls, text: str, num_classes: int, arrays: Mapping[str, np.ndarray]) -> "SynthesisState":
        raw = json.loads(text)
        if raw.get("version") != STATE_VERSION:
            raise ValueError(f"state version {raw.get('version')}")
        state = cls(num_classes, raw["batches"], raw["made"], raw["seconds"], np.array(raw["asked"], np.int64),
                    np.array(raw["hits"], np.int64), np.array(raw["kept"], np.int64))
        state.parts = {name: [arrays[name]] if len(arrays[name]) else [] for name in ARRAYS}
        return state

    def arrays(self, spec: SynthesisSpec) -> dict[str, np.ndarray]:
        empty = {
            "images": np.empty((0, spec.channels, spec.image_size, spec.image_size), np.uint8),
            "class_targets": np.empty(0, np.int64), "soft_targets": np.empty((0, spec.num_classes), np.float32),
            "teacher_labels": np.empty(0, np.int64), "kl": np.empty(0, np.float32),
        }
        return {name: np.concatenate(self.parts[name]) if self.parts[name] else empty[name] for name in ARRAYS}


# ---------------------------------------------------------------------------- one batch
def label_batch(teacher, images, targets, spec: SynthesisSpec, temperature: float, device):
    """(teacher label int64 [n], KL(target || softmax(teacher / T)) float32 [n]) of stored uint8 images."""
    import torch
    from torch.nn import functional as F

    from dfkd.training import normalize

    with torch.no_grad():
        logits = teacher(normalize(images.to(device), spec.mean, spec.std)).float()  # (n, K)
        if not torch.isfinite(logits).all():
            raise DfkdError("the teacher's logits hold NaN or inf values on synthesised images; the teacher is broken.")
        log_p = F.log_softmax(logits / temperature, dim=1)
        t = targets.to(device).double()
        kl = (t * (t.clamp_min(1e-30).log() - log_p.double())).sum(1)
    return logits.argmax(1).cpu().numpy().astype(np.int64), kl.float().cpu().numpy()


def stop_reason(plan, state: SynthesisState, budget: Mapping) -> str | None:
    if len(plan.next_classes(state)) == 0:
        return "done"
    if budget.get("images") is not None and state.made >= budget["images"]:
        return "images"
    if budget.get("seconds") is not None and state.seconds >= budget["seconds"]:
        return "seconds"
    return None


def run(teacher, spec: SynthesisSpec, synthesize_batch: Callable, settings: Mapping, plan, *, seed: int,
        budget: Mapping, partial: Path, fingerprint: str, checkpoint_seconds: float = 30.0, device=None,
        name: str = "synthesis", on_batch: Callable[[SynthesisState], None] | None = None) -> tuple[SynthesisState, str]:
    """Run `plan` to its end or the budget; return (state, why it stopped). Resumes from `partial`."""
    import torch

    from dfkd.training import make_generator

    temperature = float(settings.get("temperature", 1.0))
    state = _resume(partial, fingerprint, spec) or SynthesisState(spec.num_classes)
    if state.batches:
        _say(f"{name}: resumed at batch {state.batches} ({state.made:,} made) from {partial}")
    session, seconds_before = time.perf_counter(), state.seconds
    save_due, line_due = Every(checkpoint_seconds), Every(LINE_SECONDS)
    while (reason := stop_reason(plan, state, budget)) is None:
        classes = plan.next_classes(state)
        if budget.get("images") is not None:
            classes = classes[: budget["images"] - state.made]
        generator = make_generator("cpu", seed, "synthesis", state.batches)
        images, targets = synthesize_batch(teacher, torch.from_numpy(classes), spec, settings, generator, device)
        _check_batch(images, targets, len(classes), spec)
        labels, kl = label_batch(teacher, images, targets, spec, temperature, device)
        keep = plan.keep(state, classes, labels)
        state.asked += np.bincount(classes, minlength=spec.num_classes)
        state.hits += np.bincount(classes[labels == classes], minlength=spec.num_classes)
        state.kept += np.bincount(labels[keep], minlength=spec.num_classes)
        for key, value in zip(ARRAYS, (images.numpy(), classes, targets.numpy(), labels, kl)):
            if keep.any():
                state.parts[key].append(value[keep])
        state.made += len(classes)
        state.batches += 1
        now = time.perf_counter()
        state.seconds = seconds_before + (now - session)
        if save_due(now):
            _save(partial, state, fingerprint, spec)
        if line_due(now):
            _say(f"{name}: batch {state.batches}, {state.made:,} made, {int(state.kept.sum()):,} kept, "
                 f"{state.made / max(state.seconds, 1e-9):.1f} images/s")
        if on_batch is not None:
            on_batch(state)
    return state, reason


def _check_batch(images, targets, n: int, spec: SynthesisSpec) -> None:
    import torch

    shape = (n, spec.channels, spec.image_size, spec.image_size)
    if images.dtype != torch.uint8 or tuple(images.shape) != shape:
        raise DfkdError(f"a synthesiser returned images {images.dtype} {tuple(images.shape)}; expected uint8 {shape}.")
    if tuple(targets.shape) != (n, spec.num_classes):
        raise DfkdError(f"a synthesiser returned soft targets {tuple(targets.shape)}; expected {(n, spec.num_classes)}.")


# ---------------------------------------------------------------------------- checkpoint
def fingerprint_of(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _save(partial: Path, state: SynthesisState, fingerprint: str, spec: SynthesisSpec) -> None:
    from dfkd.io.artifacts import write_h5

    arrays = state.arrays(spec)
    state.parts = {name: [arrays[name]] if len(arrays[name]) else [] for name in ARRAYS}
    write_h5(partial, arrays, None, {"synthesis_state": state.to_json(), "synthesis_fingerprint": fingerprint})


def _resume(partial: Path, fingerprint: str, spec: SynthesisSpec) -> SynthesisState | None:
    """The checkpointed state, or None (no checkpoint, another job's, or unreadable)."""
    def read(handle) -> SynthesisState:
        arrays = {name: handle[name][()] for name in ARRAYS}
        return SynthesisState.from_json(handle.attrs["synthesis_state"], spec.num_classes, arrays)

    return read_partial(partial, "synthesis_fingerprint", fingerprint, read, "synthesis")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
