"""`dfkd score`: rank candidate transfer sources without the training data.

Each candidate is one labels file (optionally with its features file): the teacher's outputs
on it give its data-free scores (`dfkd.stages.set_scores`), a one-line collapse diagnosis when
the teacher puts most of it in one class (`dfkd.stages.collapse`), and a ranking per score.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from dfkd.errors import DfkdError
from dfkd.io.artifacts import write_json
from dfkd.io.provenance import make_provenance
from dfkd.stages.quality import check_features_file, gather_view, named_files, present_directions, read_labels
from dfkd.stages.set_scores import DATA_FREE, DIRECTIONS, SetView, data_free_scores

def _ranking(candidates: list[dict]) -> dict[str, list[str]]:
    """Per score, the candidates' names best first (by DIRECTIONS); NaN last."""
    ranking = {}
    for score in dict.fromkeys(name for c in candidates for name in c["scores"]):
        have = [c for c in candidates if score in c["scores"]]
        key = [DIRECTIONS[score] * c["scores"][score] for c in have]
        order = sorted(range(len(have)), key=lambda i: (math.isnan(key[i]), -key[i] if not math.isnan(key[i]) else 0))
        ranking[score] = [have[i]["name"] for i in order]
    return ranking



def _collapse(what: str, view: SetView, scores: Mapping[str, float], num_classes: int) -> str | None:
    """`dfkd.stages.collapse`'s one line when the teacher puts most of these rows in one class, else None."""
    from dfkd.stages.collapse import collapse_line

    return collapse_line(what, np.bincount(view.label, minlength=num_classes), scores.get("soft_effective_classes"))



def score_sources(
    labels_files: Sequence[Path],
    num_classes: int,
    features_files: Sequence[Path] | None = None,
    per_class: int | None = None,
    *,
    seed: int = 0,
    rank_by: str = "fill",
) -> dict:
    """Scores of each source alone and of the balanced mix Algorithm 1 assembles from them
    in order (`dfkd.stages.balance.assemble`, in memory), ranked best first by `rank_by`.

    `features_files[i]` belongs to `labels_files[i]`. `per_class` defaults to the first
    source's rows // K (assemble's default); the mix takes at most `per_class` per class.
    """
    from dfkd.stages.balance import assemble

    labels_paths = [Path(p) for p in labels_files]
    named = named_files(labels_paths)
    labels = {name: read_labels(path, num_classes) for name, path in named.items()}
    features = None
    if features_files is not None:
        if len(features_files) != len(labels_paths):
            raise DfkdError(
                f"got {len(features_files)} features files for {len(labels_paths)} labels files "
                f"({[str(p) for p in features_files]}); pass one features file per labels file, in the same order."
            )
        features = dict(zip(named, map(Path, features_files)))
        for name, path in features.items():
            check_features_file(path, named[name], len(labels[name]), num_classes)
    first = next(iter(labels))
    cap = len(labels[first]) // num_classes if per_class is None else per_class
    if cap < 1:
        raise DfkdError(
            f"{named[first]} has {len(labels[first])} rows, fewer than --num-classes={num_classes}; pass --per-class."
        )
    if rank_by not in DATA_FREE:
        raise DfkdError(f"--rank-by must be one of {list(DATA_FREE)}, got '{rank_by}'.")

    candidates = []
    for name, frame in labels.items():
        rows = pd.DataFrame({"source": name, "index": frame["index"].to_numpy()})
        view = gather_view(rows, {name: frame}, None if features is None else {name: features[name]})
        candidates.append({"name": name, "kind": "source", "sources": [name], "n": int(len(rows)),
                           "scores": data_free_scores(view, num_classes, cap)})
        candidates[-1]["collapse"] = _collapse(f"source `{name}`", view, candidates[-1]["scores"], num_classes)
    mix, counts = assemble(list(labels.items()), num_classes, balanced=True, per_class=cap,
                           total=cap * num_classes, seed=seed)
    if not mix.empty:
        view = gather_view(mix, labels, features)
        candidates.append({"name": "mix:" + "+".join(labels), "kind": "mix", "sources": list(labels),
                           "n": int(len(mix)), "short_classes": int(counts["short"].sum()),
                           "scores": data_free_scores(view, num_classes, cap)})
        candidates[-1]["collapse"] = _collapse(f"their balanced mix `{candidates[-1]['name']}`", view,
                                               candidates[-1]["scores"], num_classes)
    ranking = _ranking(candidates)
    if rank_by not in ranking:
        raise DfkdError(f"--rank-by {rank_by} needs the features files; pass --features.")
    by_name = {c["name"]: c for c in candidates}
    return {
        "num_classes": int(num_classes),
        "per_class": int(cap),
        "seed": int(seed),
        "rank_by": rank_by,
        "candidates": [by_name[name] for name in ranking[rank_by]],
        "ranking": ranking,
        "directions": present_directions(*(c["scores"] for c in candidates)),
    }



def score_files(
    labels_files: Sequence[Path],
    num_classes: int,
    out: Path,
    features_files: Sequence[Path] | None = None,
    per_class: int | None = None,
    *,
    seed: int = 0,
    rank_by: str = "fill",
) -> dict:
    """`score_sources`, written to `out` (JSON with provenance); returns the payload."""
    payload = score_sources(labels_files, num_classes, features_files, per_class, seed=seed, rank_by=rank_by)
    inputs = {f"labels/{Path(p).stem}": Path(p) for p in labels_files}
    inputs.update({f"features/{Path(p).stem}": Path(p) for p in features_files or []})
    config = {"num_classes": num_classes, "per_class": payload["per_class"], "rank_by": rank_by}
    write_json(out, payload, make_provenance("score", config, inputs=inputs, seed=seed))
    return payload



def format_scores(payload: Mapping) -> str:
    """A plain-text table of `score_sources`'s candidates, best first, then one line per collapsed
    candidate (`dfkd.stages.collapse`)."""
    names = list(payload["ranking"])
    header = ["candidate", "n"] + names
    rows = [[c["name"], str(c["n"])] + [f"{c['scores'][s]:.4g}" if s in c["scores"] else "-" for s in names]
            for c in payload["candidates"]]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lower = [s for s in names if payload["directions"][s] < 0]
    note = f"; lower is better: {', '.join(lower)}" if lower else "; higher is better for every score"
    collapses = [c["collapse"] for c in payload["candidates"] if c.get("collapse")]
    return "\n".join(lines + [f"ranked by {payload['rank_by']}, per_class={payload['per_class']}{note}", *collapses])
