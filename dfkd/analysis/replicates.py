"""Reading a target's replicated results, and turning them into table columns and claims.

The summary (dfkd.analysis.report) and every study table (dfkd.analysis.study.tables) read their numbers through
`ReplicateReader` and aggregate them with `replicate_columns`, so each accuracy and distance is
shown as mean, sample sd and n over the configured seeds (dfkd.analysis.stats), with each seed's value
kept beside them in the CSV and JSON. Claims compare paired seeds (`dfkd.analysis.stats.paired_claim`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from dfkd.io import layout
from dfkd.io.artifacts import read_json
from dfkd.errors import DfkdError
from dfkd.analysis.stats import Claim, paired_claim, summarize

FAMILIES = ("noise", "synthetic", "natural")  # the study's order, worst to best


def read_counts(path: Path) -> pd.DataFrame:
    """A transfer set's class counts (`dfkd assemble --counts`), checked."""
    if not Path(path).is_file():
        raise DfkdError(f"class counts not found: {path}. Run `snakemake` to assemble the set.")
    frame = pd.read_csv(path)
    missing = {"class", "before", "after"} - set(frame.columns)
    if missing:
        raise DfkdError(f"{path} lacks columns {sorted(missing)}; it was not written by `dfkd assemble`.")
    return frame


def student_accuracy(path: Path, agreement_ok: bool = False) -> float:
    """A student's headline number from its metrics.json, in percent: the final test accuracy,
    or with `agreement_ok` the teacher agreement of a target without a test split."""
    metrics = read_json(path)
    keys = ("test_accuracy", "teacher_agreement") if agreement_ok else ("test_accuracy",)
    key = next((k for k in keys if k in metrics), None)
    if key is None:
        raise DfkdError(f"{path} lacks {' and '.join(keys)}; it was not written by `dfkd distill`.")
    return 100.0 * float(metrics[key])


class ReplicateReader:
    """Reads a target's result files for every seed and remembers each file it read (provenance)."""

    def __init__(self, target_dir: Path, seeds: Sequence[int]):
        self.target_dir = Path(target_dir)
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise DfkdError("no replicate seeds given; config `seeds` lists at least one.")
        self.inputs: dict[str, Path] = {}
        self._counts: dict[str, pd.DataFrame] = {}  # each counts file read once (Table 9 wants seed 0 twice)

    def _note(self, relative: str) -> Path:
        path = self.target_dir / relative
        self.inputs[relative] = path
        return path

    def counts(self, set_name: str) -> pd.DataFrame:
        """The first seed's class counts (balanced counts change with the seed only where a
        `size` or `total` cap binds; `sizes` gives every seed's size)."""
        return self._seed_counts(set_name, self.seeds[0])

    def sizes(self, set_name: str) -> dict[int, float]:
        return {s: float(self._seed_counts(set_name, s)["after"].sum()) for s in self.seeds}

    def _seed_counts(self, set_name: str, seed: int) -> pd.DataFrame:
        relative = layout.counts(set_name, seed)
        if relative not in self._counts:
            self._counts[relative] = read_counts(self._note(relative))
        return self._counts[relative].copy()

    def distances(self, set_name: str, key: str = "hausdorff") -> dict[int, float]:
        return {s: float(read_json(self._note(layout.distance(set_name, s)))[key]) for s in self.seeds}

    def accuracies(self, set_name: str, variant: str) -> dict[int, float]:
        """seed -> the student's final test accuracy, in percent."""
        return {seed: student_accuracy(self._note(layout.student_metrics(layout.run_name(set_name, variant), seed)))
                for seed in self.seeds}

    def teacher(self) -> dict:
        return read_json(self._note("teacher/metrics.json"))


def replicate_columns(column: str, values: Mapping[int, float]) -> dict[str, Any]:
    """{column}_mean, _sd, _n, then {column}_seed{k} for each seed."""
    s = summarize(values.values())
    record: dict[str, Any] = {f"{column}_mean": s.mean, f"{column}_sd": s.sd, f"{column}_n": s.n}
    record.update({f"{column}_seed{seed}": value for seed, value in sorted(values.items())})
    return record


def seed_values(record: Mapping[str, Any], column: str, seeds: Iterable[int]) -> dict[int, float]:
    """seed -> value of `column` in a row made by `replicate_columns` (missing seeds left out)."""
    out = {}
    for seed in seeds:
        value = record.get(f"{column}_seed{seed}")
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[int(seed)] = float(value)
    return out


def mean_sd(record: Mapping[str, Any], column: str, digits: int = 2) -> str:
    """'mean ± sd' of a replicated column ('mean' alone for one seed)."""
    mean, sd = record.get(f"{column}_mean"), record.get(f"{column}_sd")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def display_frame(frame: pd.DataFrame, replicated: Sequence[str], digits: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The Markdown view: each replicated column as one 'mean ± sd' cell, its per-seed columns and
    n dropped (n goes into the column title), other columns as they are."""
    digits = dict(digits or {})
    shown = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        base = next((c for c in replicated if name == f"{c}_mean"), None)
        if base is not None:
            n = sorted({int(v) for v in frame[f"{base}_n"] if pd.notna(v)})
            title = f"{base} (mean ± sd, n={'/'.join(map(str, n)) or 0})"
            shown[title] = [mean_sd(r, base, digits.get(base, 2)) for r in frame.to_dict("records")]
        elif not any(name.startswith(f"{c}_") for c in replicated):
            shown[name] = frame[name]
    return shown


def compare_rows(rows: Mapping[str, Mapping], better: str, worse: str, column: str, seeds: Iterable[int],
                 claim: str, unit: str = "points", min_effect: float | None = None) -> Claim | None:
    """The paired claim 'row better > row worse' on `column`, or None when a row is missing.
    `min_effect` (in `unit`) lets the claim be found equivalent (dfkd.analysis.stats)."""
    if better not in rows or worse not in rows:
        return None
    seeds = list(seeds)
    return paired_claim(claim, seed_values(rows[better], column, seeds), seed_values(rows[worse], column, seeds),
                        unit, min_effect)


def ordering_claims(rows: Mapping[str, Mapping], names: Sequence[str], column: str, seeds: Iterable[int],
                    what: str, label: str = "", min_effect: float | None = None) -> list[Claim]:
    """'names[0] < names[1] < ...' as one paired claim per adjacent pair."""
    claims = []
    for worse, better in zip(names, names[1:]):
        claim = compare_rows(rows, better, worse, column, seeds, f"{worse} < {better} in {what}{label}",
                             min_effect=min_effect)
        if claim is not None:
            claims.append(claim)
    return claims


def family_claims(rows: Mapping[str, Mapping], column: str, seeds: Sequence[int], label: str = "",
                  min_effect: float | None = None) -> list[Claim]:
    """The study's two headline claims over rows named noise, noise_bal, synthetic, ...:
    balanced beats unbalanced in each family, and noise < synthetic < natural (balanced and
    unbalanced), each adjacent pair compared on paired seeds (accuracy, in points)."""
    claims = []
    for family in FAMILIES:
        claim = compare_rows(rows, f"{family}_bal", family, column, seeds, f"balanced beats unbalanced for {family}{label}",
                             min_effect=min_effect)
        if claim is not None:
            claims.append(claim)
    for suffix, kind in (("_bal", "balanced"), ("", "unbalanced")):
        names = [f + suffix for f in FAMILIES if f + suffix in rows]
        claims += ordering_claims(rows, names, column, seeds, f"accuracy ({kind})", label, min_effect)
    return claims


SYNTHESIS_CLAIMS = (  # (row A, row B, claim): data synthesised from the teacher beside arbitrary data, A - B paired
    # 'holds': arbitrary data beats synthesised; 'equivalent': it matches; 'does not hold': synthesis wins.
    # Data Impressions (issue 25); DeepInversion for a BatchNorm teacher (issue 27, presets/bn_synthesis.yaml)
    ("natural_bal", "impressions", "arbitrary data beats synthesised data: natural_bal > impressions"),
    ("natural_bal", "inversion", "arbitrary data beats synthesised data: natural_bal > inversion"),
    ("natural_bal_di", "natural_bal", "topping up with impressions helps: natural_bal_di > natural_bal"),
    ("noise_bal_di", "noise_bal", "topping up with impressions helps: noise_bal_di > noise_bal"),
    ("natural_bal_inv", "natural_bal", "topping up with inversion helps: natural_bal_inv > natural_bal"),
    ("synthetic_bal_inv", "synthetic_bal", "topping up with inversion helps: synthetic_bal_inv > synthetic_bal"),
)


def synthesis_claims(rows: Mapping[str, Mapping], column: str, seeds: Sequence[int], label: str = "",
                     min_effect: float | None = None) -> list[Claim]:
    """The claims of the rows synthesised from the teacher, where the table has both rows
    (the `synthesis` table of presets/synthesis.yaml)."""
    claims = [compare_rows(rows, a, b, column, seeds, f"{text}{label}", min_effect=min_effect)
              for a, b, text in SYNTHESIS_CLAIMS]
    return [claim for claim in claims if claim is not None]
