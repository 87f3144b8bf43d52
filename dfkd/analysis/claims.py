"""`dfkd claim`: decide "run A beats run B" (or a published number) from a target's replicates.

The study tables decide the claims they were written for; a researcher trying a recipe of their
own (a variant, a row selection, a new source) asks the same question of any two runs. This
reads each seed's `students/{run}/seed{k}/metrics.json` under `results/{target}/` and decides the
claim with `dfkd.analysis.stats.paired_claim`: the same seed on both sides, the mean paired difference and
its 95% Student's t interval, equivalence within +- min_effect, and the seeds that would decide
it. Against a number (e.g. a paper's 79.62%), each seed's accuracy is paired with that constant:
the interval then says where the run's mean lies. Several claims asked at once are one family:
each also gets its Holm-adjusted verdict (`dfkd.analysis.stats.holm`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from dfkd.io import layout
from dfkd.errors import DfkdError
from dfkd.analysis.replicates import student_accuracy
from dfkd.analysis.report import markdown_table
from dfkd.analysis.stats import CONFIDENCE, METHOD, Claim, claims_rows, holm, paired_claim, summarize


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


def parse_claim(text: str) -> tuple[str, str | float]:
    """'A>B' or 'A > 79.62' -> (A, B or the number)."""
    better, sep, than = (part.strip() for part in text.partition(">"))
    if not sep or not better or not than or ">" in than:
        raise DfkdError(f"claim '{text}' is not 'RUN > RUN' or 'RUN > NUMBER', e.g. 'natural_bal.strong > natural_bal'.")
    try:
        return better, float(than)
    except ValueError:
        return better, than


def decide_all(target_dir: Path, claims: Sequence[tuple[str, str | float]], seeds: Sequence[int] | None = None,
               min_effect: float | None = None) -> list[dict[str, Any]]:
    """Every claim decided (`decide`), then all of them as one family (Holm)."""
    decisions = [decide(target_dir, better, than, seeds, min_effect) for better, than in claims]
    for decision, claim in zip(decisions, holm([d["claim"] for d in decisions])):
        decision["claim"] = claim
    return decisions


def decide(target_dir: Path, better: str, than: str | float, seeds: Sequence[int] | None = None,
           min_effect: float | None = None) -> dict[str, Any]:
    """The claim 'better > than' (a run name, or a number in percent) over paired seeds."""
    mine = run_accuracies(target_dir, better, seeds)
    if isinstance(than, str):
        theirs = run_accuracies(target_dir, than, seeds if seeds is not None else
                                [s for s in seeds_of(target_dir, than) if s in mine] or None)
        label = than
    else:
        theirs, label = {seed: float(than) for seed in mine}, f"{float(than):g}%"
    claim = paired_claim(f"{better} beats {label}", mine, theirs, min_effect=min_effect)
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


def format_decisions(decisions: Sequence[Mapping[str, Any]]) -> str:
    """One decision as `format_decision` writes it; several as their sides, a table of the claims
    (with the Holm verdicts and the seeds needed) and one line each."""
    if len(decisions) == 1:
        return format_decision(decisions[0])
    blocks = ["\n".join(format_decision(d).splitlines()[:2]) for d in decisions]
    claims = [d["claim"] for d in decisions]
    return "\n\n".join([*blocks, markdown_table(pd.DataFrame(claims_rows(claims))).rstrip(),
                         "\n".join(f"- {c.line()}" for c in claims), METHOD])
