"""`dfkd claim`: decide "run A beats run B" (or a published number) from a target's replicates.

The study tables decide the claims they were written for; a researcher trying a recipe of their
own (a variant, a row selection, a new source) asks the same question of any two runs. This
reads each seed's `students/{run}/seed{k}/metrics.json` under `results/{target}/` and decides the
claim with `dfkd.stats.paired_claim`: the same seed on both sides, the mean paired difference and
its 95% Student's t interval. Against a number (e.g. a paper's 79.62%), each seed's accuracy is
paired with that constant: the interval then says where the run's mean lies.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from dfkd import layout
from dfkd.errors import DfkdError
from dfkd.replicates import student_accuracy
from dfkd.stats import CONFIDENCE, Claim, paired_claim, summarize


def seeds_of(target_dir: Path, run: str) -> list[int]:
    """The seeds whose student of `run` has finished (its metrics.json exists), in order."""
    folder = Path(target_dir) / "students" / run
    found = [int(m.group(1)) for p in folder.glob("seed*/metrics.json")
             if (m := re.fullmatch(r"seed(\d+)", p.parent.name))]
    return sorted(found)


def run_accuracies(target_dir: Path, run: str, seeds: Sequence[int] | None = None) -> dict[int, float]:
    """seed -> the student's final test accuracy (or teacher agreement), in percent."""
    target_dir = Path(target_dir)
    seeds = list(seeds) if seeds is not None else seeds_of(target_dir, run)
    if not seeds:
        raise DfkdError(f"no finished student of run '{run}' under {target_dir / 'students' / run}; "
                        f"build students/{run}/seed{{k}}/metrics.json first.")
    values = {}
    for seed in seeds:
        path = target_dir / layout.student_metrics(run, seed)
        if not path.is_file():
            raise DfkdError(f"{path} not found: run '{run}' has no finished student for seed {seed}.")
        values[int(seed)] = student_accuracy(path, agreement_ok=True)
    return values


def decide(target_dir: Path, better: str, than: str | float, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """The claim 'better > than' (a run name, or a number in percent) over paired seeds."""
    mine = run_accuracies(target_dir, better, seeds)
    if isinstance(than, str):
        theirs = run_accuracies(target_dir, than, seeds if seeds is not None else
                                [s for s in seeds_of(target_dir, than) if s in mine] or None)
        label = than
    else:
        theirs, label = {seed: float(than) for seed in mine}, f"{float(than):g}%"
    claim = paired_claim(f"{better} beats {label}", mine, theirs)
    return {"claim": claim, "better": {"run": better, "seeds": mine},
            "than": {"run" if isinstance(than, str) else "value": than, "seeds": theirs}}


def format_decision(decision: Mapping[str, Any]) -> str:
    claim: Claim = decision["claim"]

    def side(part: Mapping[str, Any]) -> str:
        values = part["seeds"]
        if "value" in part:
            return f"{part['value']:g}% (a constant)"
        s = summarize(values.values())
        spread = f" ± {s.sd:.2f}" if s.n > 1 else ""
        return f"{part['run']}: {s.mean:.2f}{spread}% over seeds {sorted(values)}"

    return "\n".join([side(decision["better"]), side(decision["than"]), claim.line(),
                      f"({CONFIDENCE:.0%} Student's t interval over the paired differences)"])
