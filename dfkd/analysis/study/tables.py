"""Stage `table`: one of the study's tables, rebuilt from a target's results.

Inputs (under `results/{target}/`, for every seed k of config `seeds`; dfkd.io.layout):
`transfer/{set}/seed{k}.counts.csv`, `distance/{set}/seed{k}.json`,
`students/{run}/seed{k}/metrics.json` of each row's set in each variant, `teacher/metrics.json`.
Outputs: `tables/{table}.csv` (the numbers: accuracy and distance as mean, sample sd, n and each
seed's value), `.md` (title, how it was made, the table as mean ± sd with the study's published
numbers beside ours, one line per claim decided from paired seeds), `.tex` (the same table,
booktabs) and `.json` (the rows, `claims: [{claim, difference_mean, ci_low, ci_high, n,
verdict}]`, and provenance: every file read, with its hash).

`params` is the config slice `dfkd.slices.study_table_slice` makes: the target, the table
name, the study's name for the target's dataset, the variants, and the rows in order, each
`{"row": study row name, "set": transfer set, "recipe": its assemble slice}`, and the seeds.

Over 400 lines because it holds one short builder per table (nine of them, in `BUILDERS`) beside
the one writer they share; a module per builder would split what is read together.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from dfkd.io.artifacts import atomic_path, read_json, write_json
from dfkd.io.layout import DEFAULT_VARIANT
from dfkd.errors import DfkdError
from dfkd.io.provenance import make_provenance
from dfkd.analysis.replicates import (
    FAMILIES, ReplicateReader, compare_rows, display_frame, family_claims, mean_sd, ordering_claims,
    replicate_columns, seed_values, synthesis_claims,
)
from dfkd.analysis.report import markdown_table, set_columns
from dfkd.analysis.stats import METHOD, Claim, claims_rows, holm, paired_claim
from dfkd.analysis.study import TABLE_NAMES
from dfkd.analysis.study.published import published, table_rows


@dataclass
class Table:
    title: str
    method: str
    frame: pd.DataFrame
    claims: list[Claim] = field(default_factory=list)  # decided from paired seeds
    facts: list[str] = field(default_factory=list)     # checks of counts that no seed changes
    notes: list[str] = field(default_factory=list)
    markdown: str | None = None  # a custom Markdown body (default: the frame)
    replicated: list[str] = field(default_factory=list)  # columns shown as mean ± sd

    @property
    def verdicts(self) -> list[str]:
        return [claim.line() for claim in self.claims] + self.facts


# ---------------------------------------------------------------------------- helpers
def accuracy_columns(variants: list[str]) -> dict[str, str]:
    """variant -> column name: 'accuracy' for a single variant, 'accuracy_{variant}' for several."""
    if len(variants) == 1:
        return {variants[0]: "accuracy"}
    return {v: f"accuracy_{v}" for v in variants}


def describe_variants(params: Mapping) -> str:
    names = ", ".join("as configured" if v == DEFAULT_VARIANT else f"variant '{v}'" for v in params["variants"])
    return f"Students: {names} (see config.yaml `variants`); accuracy is the final epoch's test accuracy in percent."


def replicated_columns(variants: list[str]) -> list[str]:
    return [*accuracy_columns(variants).values(), "hausdorff"]


def set_row(reader: ReplicateReader, row: Mapping, variants: list[str]) -> dict[str, Any]:
    """The common columns of one row: its set, sources, size, class range, and accuracies and
    distance over seeds (mean, sd, n, each seed)."""
    record: dict[str, Any] = {
        "row": row["row"], "transfer_set": row["set"], **set_columns(row["recipe"], reader.counts(row["set"])),
    }
    for variant, column in accuracy_columns(variants).items():
        record.update(replicate_columns(column, reader.accuracies(row["set"], variant)))
    record.update(replicate_columns("hausdorff", reader.distances(row["set"])))
    return record


def add_study_columns(frame: pd.DataFrame, table: str, keys: Mapping[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """Columns 'study (DATASET) <name>' from published.yaml for rows the study reports."""
    dataset, rows = table_rows(table)
    if not rows:
        return frame, []
    for key, column in keys.items():
        frame[f"study ({dataset}) {column}"] = [rows.get(str(r), {}).get(key) for r in frame["row"]]
    note = published()[table].get("note", "")
    return frame, [f"Study columns: the study's published numbers on {dataset} ({note}); other data, other models: compare trends, not values."]


def verdict(claim: str, holds: bool | None, evidence: str) -> str:
    """A fact about counts (no seed changes it), as a verdict line."""
    status = "not measured" if holds is None else ("holds" if holds else "does not hold")
    return f"{claim}: **{status}** ({evidence})"


def _by_row(frame: pd.DataFrame) -> dict[str, Mapping]:
    return {str(r["row"]): r for r in frame.to_dict("records")}


def _missing(claim: str) -> Claim:
    return Claim(claim, math.nan, math.nan, math.nan, 0, "not measured")


# ---------------------------------------------------------------------------- the tables
def rows_and_claims(reader: ReplicateReader, params: Mapping,
                    claims_of: Callable[..., list[Claim]]) -> tuple[pd.DataFrame, list[Claim], float]:
    """A table of one row per set with an accuracy column per variant, the claims `claims_of`
    decides in each variant's column, and the teacher's test accuracy in percent."""
    variants = list(params["variants"])
    frame = pd.DataFrame([set_row(reader, row, variants) for row in params["rows"]])
    rows = _by_row(frame)
    claims = []
    for variant, column in accuracy_columns(variants).items():
        label = "" if len(variants) == 1 else f" [{variant}]"
        claims += claims_of(rows, column, reader.seeds, label, params.get("min_effect"))
    return frame, claims, 100.0 * float(reader.teacher()["test_accuracy"])


def main_table(reader: ReplicateReader, params: Mapping) -> Table:
    variants = list(params["variants"])
    frame, claims, teacher = rows_and_claims(reader, params, family_claims)
    return Table(
        title="Main table: students on every transfer set, with and without augmentation",
        method=f"Teacher test accuracy {teacher:.2f}%. {describe_variants(params)} Distances are exact "
        "Hausdorff distances to the training set in the teacher's penultimate feature space.",
        frame=frame, claims=claims, replicated=replicated_columns(variants),
        notes=["The study's main-paper table is not available (only its supplementary material), so no published column."],
    )


ZSKD_FMNIST = ("ZSKD reports 79.62% for Data Impressions on Fashion-MNIST (LeNet-5 to LeNet-5-half, its own teacher of "
               "90.84%, 500 epochs, the best test epoch kept, as DAFL and the CMI toolbox do); dfkd reports the final "
               "epoch's accuracy, the stricter protocol.")


SYNTHESISED = {"impressions": "Data Impressions", "inversion": "DeepInversion"}  # row -> what made it
TOP_UPS = {"_di": "impressions", "_inv": "DeepInversion"}  # row suffix -> the fill's synthesiser


def synthesis_table(reader: ReplicateReader, params: Mapping) -> Table:
    """Data synthesised from the teacher (Data Impressions, issue 25; DeepInversion, issue 27) beside
    arbitrary data with the same teacher, students and seeds: its claims are a family of their own,
    at the table's own seeds."""
    variants = list(params["variants"])
    frame, claims, teacher = rows_and_claims(reader, params, synthesis_claims)
    rows = [row["row"] for row in params["rows"]]
    made = " and ".join(name for row, name in SYNTHESISED.items() if row in rows) or "Data synthesised from the teacher"
    top_ups = [f"Rows *{suffix} are the arbitrary set topped up by a class-conditional fill of {what} (only the rows "
               "its sources leave short)." for suffix, what in TOP_UPS.items() if any(r.endswith(suffix) for r in rows)]
    return Table(
        title=f"{made} beside arbitrary transfer sets: the same teacher, students and seeds",
        method=" ".join([f"Teacher test accuracy {teacher:.2f}%. {describe_variants(params)}", *top_ups]),
        frame=frame, claims=claims, replicated=replicated_columns(variants), notes=[ZSKD_FMNIST],
    )


def class_balance_table(name: str) -> Callable[[ReplicateReader, Mapping], Table]:
    """Tables 1 and 2: fixed-size sets over k classes; accuracy and distance against k."""
    source_kind = "the training data" if name == "table1" else "arbitrary data (mixed, balanced)"

    def build(reader: ReplicateReader, params: Mapping) -> Table:
        variants, seeds = list(params["variants"]), reader.seeds
        records = []
        for row in params["rows"]:
            record = set_row(reader, row, variants)
            record["classes"] = row["recipe"]["classes"] or params["num_classes"]
            records.append(record)
        frame = pd.DataFrame(records)
        frame.insert(2, "classes", frame.pop("classes"))
        frame, notes = add_study_columns(frame, name, {"accuracy": "accuracy", "distance": "distance"})
        ordered = frame.sort_values("classes", kind="stable").to_dict("records")
        column = accuracy_columns(variants)[variants[0]]
        claims = []
        for fewer, more in zip(ordered, ordered[1:]):
            k0, k1 = fewer["classes"], more["classes"]
            claims.append(paired_claim(f"accuracy rises with the number of classes (k = {k0} < k = {k1})",
                                       seed_values(more, column, seeds), seed_values(fewer, column, seeds),
                                       min_effect=params.get("min_effect")))
        for fewer, more in zip(ordered, ordered[1:]):
            k0, k1 = fewer["classes"], more["classes"]
            claims.append(paired_claim(f"distance to the training set falls with the number of classes (k = {k0} -> {k1})",
                                       seed_values(fewer, "hausdorff", seeds), seed_values(more, "hausdorff", seeds),
                                       unit="(distance)"))
        return Table(
            title=f"Table {name.removeprefix('table')}: class balance of a fixed-size transfer set from {source_kind}",
            method="Each row keeps classes 0..k-1 of the teacher's labels, split evenly over a fixed size "
            f"(short classes stay short: see size). {describe_variants(params)}",
            frame=frame, claims=claims, notes=notes, replicated=replicated_columns(variants),
        )

    return build


def base_order_table(reader: ReplicateReader, params: Mapping) -> Table:
    """Table 3: A, A+B, B, B+A."""
    variants, seeds = list(params["variants"]), reader.seeds
    frame = pd.DataFrame([set_row(reader, row, variants) for row in params["rows"]])
    frame, notes = add_study_columns(frame, "table3", {"accuracy": "accuracy"})
    rows, column = _by_row(frame), accuracy_columns(variants)[variants[0]]
    claims = []
    for claim, better, worse in (("balancing base A helps (A+B > A)", "A+B", "A"),
                                 ("balancing base B helps (B+A > B)", "B+A", "B"),
                                 ("the base matters: the better base wins balanced (B+A > A+B)", "B+A", "A+B")):
        claims.append(compare_rows(rows, better, worse, column, seeds, claim, min_effect=params.get("min_effect"))
                      or _missing(claim))
    return Table(
        title="Table 3: the base transfer set matters (order of mixing)",
        method=f"A and B alone (unbalanced) and each balanced with the other as filler. {describe_variants(params)}",
        frame=frame, claims=claims, notes=notes, replicated=replicated_columns(variants),
    )


def balancer_table(reader: ReplicateReader, params: Mapping) -> Table:
    """Table 4: unbalanced bases x the set added to balance them."""
    variants, seeds = list(params["variants"]), reader.seeds
    records = []
    for row in params["rows"]:
        base, _, balancer = str(row["row"]).partition("/")
        record = set_row(reader, row, variants)
        record.update(base=base, balancer=balancer or "none")
        records.append(record)
    frame = pd.DataFrame(records)
    for position, key in enumerate(("base", "balancer"), start=1):
        frame.insert(position, key, frame.pop(key))
    frame, notes = add_study_columns(frame, "table4", {"accuracy": "accuracy"})
    column = accuracy_columns(variants)[variants[0]]
    claims = []
    for base, group in frame.groupby("base", sort=False):
        by_balancer = {r["balancer"]: r for r in group.to_dict("records")}
        if "none" not in by_balancer or len(by_balancer) < 2:
            claims.append(_missing(f"balancing base {base} helps"))
            continue
        added = [k for k in by_balancer if k != "none"]
        for balancer in added:
            claims.append(compare_rows(by_balancer, balancer, "none", column, seeds,
                                       f"balancing the {base} base with {balancer} beats the unbalanced base",
                                       min_effect=params.get("min_effect")))
        if "natural" in added:
            for other in (k for k in added if k != "natural"):
                claims.append(compare_rows(by_balancer, "natural", other, column, seeds,
                                           f"natural data balances the {base} base better than {other}",
                                           min_effect=params.get("min_effect")))
    study_column = next((c for c in frame.columns if c.startswith("study")), None)
    return Table(
        title="Table 4: which set is added to balance an unbalanced base",
        method="Each base alone (none) and balanced with each filler; sets never exceed the training-set "
        f"size. {describe_variants(params)}",
        frame=frame, claims=claims, notes=notes, replicated=replicated_columns(variants),
        markdown=_pivot_markdown(frame, column, study_column),
    )


def _pivot_markdown(frame: pd.DataFrame, column: str, study_column: str | None) -> str:
    """Bases as rows, balancers as columns, cells 'mean ± sd (study)'."""
    def cell(record: Mapping) -> str:
        text = mean_sd(record, column)
        if study_column and record.get(study_column) is not None and not pd.isna(record[study_column]):
            text += f" ({record[study_column]:.2f})"
        return text

    balancers = list(dict.fromkeys(frame["balancer"]))
    grid = {b: {r["balancer"]: cell(r) for r in g.to_dict("records")} for b, g in frame.groupby("base", sort=False)}
    pivot = pd.DataFrame([{"base": b, **{k: row.get(k, "-") for k in balancers}} for b, row in grid.items()])
    n = sorted({int(v) for v in frame[f"{column}_n"]})
    legend = (f"Cells: our accuracy, mean ± sd over {'/'.join(map(str, n))} seeds"
              + (f" ({study_column.removesuffix(' accuracy')})" if study_column else "") + ".\n\n")
    return legend + markdown_table(pivot)


def distance_table(reader: ReplicateReader, params: Mapping) -> Table:
    """Table 5: accuracy against feature distance for noise, synthetic, natural."""
    variants, seeds = list(params["variants"]), reader.seeds
    frame = pd.DataFrame([set_row(reader, row, variants) for row in params["rows"]])
    frame, notes = add_study_columns(frame, "table5", {"accuracy": "accuracy", "distance": "distance"})
    column = accuracy_columns(variants)[variants[0]]
    ordered = frame.sort_values("hausdorff_mean", kind="stable").to_dict("records")
    claims = [
        paired_claim(f"the closer set is the better one: {near['row']} (distance {near['hausdorff_mean']:.2f}) "
                     f"beats {far['row']} ({far['hausdorff_mean']:.2f})",
                     seed_values(near, column, seeds), seed_values(far, column, seeds),
                     min_effect=params.get("min_effect"))
        for near, far in zip(ordered, ordered[1:])
    ]
    rows = _by_row(frame)
    claims += ordering_claims(rows, [f for f in FAMILIES if f in rows], column, seeds, "accuracy",
                              min_effect=params.get("min_effect"))
    return Table(
        title="Table 5: distillation accuracy against feature distance",
        method=f"{describe_variants(params)} Distance: exact Hausdorff distance to the training set in the teacher's "
        "penultimate features; rows are ordered by mean distance for the 'closer is better' claims.",
        frame=frame, claims=claims, notes=notes, replicated=replicated_columns(variants),
    )


def effective_classes(counts: np.ndarray) -> float:
    """exp(entropy) of the class distribution: K when perfectly even, 1 when all in one class."""
    p = counts[counts > 0] / counts.sum() if counts.sum() else np.array([1.0])
    return float(math.exp(-(p * np.log(p)).sum()))


def class_frequency_table(reader: ReplicateReader, params: Mapping) -> Table:
    """Tables 6 to 8 (and Figures 1 to 3): per-class counts before and after balancing."""
    dataset = params.get("dataset")
    study = published()["class_frequencies"].get(dataset, {}) if params["num_classes"] == 10 else {}
    records, facts = [], []
    for row in params["rows"]:
        counts = reader.counts(row["set"])
        before, after = counts["before"].to_numpy(), counts["after"].to_numpy()
        for c, b, a in zip(counts["class"], before, after):
            record = {"row": row["row"], "transfer_set": row["set"], "class": int(c), "unbalanced": int(b), "balanced": int(a)}
            if row["row"] in study:
                record[f"study ({dataset}) unbalanced"] = study[row["row"]]["unbalanced"][int(c)]
                record[f"study ({dataset}) balanced"] = study[row["row"]]["balanced"][int(c)]
            records.append(record)
        e_before, e_after = effective_classes(before), effective_classes(after)
        short = [int(c) for c, a, t in zip(counts["class"], after, counts.get("target", after)) if a < t]
        facts.append(verdict(
            f"balancing evens the classes of {row['row']} ({row['set']})", e_after > e_before,
            f"effective classes {e_before:.2f} -> {e_after:.2f} of {len(counts)}; short after balancing: {short or 'none'}"))
    frame = pd.DataFrame(records)
    notes = [f"Study columns: the study's published counts on {dataset} (its Tables 6 to 8)."] if study else []
    return Table(
        title="Class frequencies before and after balancing (the study's Tables 6 to 8, Figures 1 to 3)",
        method="Teacher class counts of each family's base source (unbalanced) and of its balanced set "
        f"(Algorithm 1), seed {reader.seeds[0]}; the bar charts are figures/class_counts_{{set}}.png. "
        "Effective classes = exp(entropy).",
        frame=frame, facts=facts, notes=notes,
    )


def size_table(reader: ReplicateReader, params: Mapping) -> Table:
    """Table 9: the size of every transfer set (every seed's)."""
    dataset = params.get("dataset")
    study = published()["table9"].get(dataset, {})
    records = []
    for row in params["rows"]:
        columns = set_columns(row["recipe"], reader.counts(row["set"]))
        sizes = reader.sizes(row["set"])
        records.append({
            "row": row["row"], "transfer_set": row["set"],
            **{key: columns[key] for key in ("sources", "balanced", "max_class")},
            "size": int(max(sizes.values())),
            **{f"size_seed{s}": int(v) for s, v in sizes.items()},
            **({f"study ({dataset}) size": study.get(row["row"])} if study else {}),
        })
    frame = pd.DataFrame(records)
    total, per_class = params["total"], params["per_class"]
    over_total = frame[frame["size"] > total]["transfer_set"].tolist() if total else []
    over_class = frame[frame["balanced"] & (frame["max_class"] > per_class)]["transfer_set"].tolist() if per_class else []
    facts = [
        verdict(f"no transfer set exceeds the training-set size ({total})", not over_total, f"largest {frame['size'].max()} (any seed); over: {over_total or 'none'}"),
        verdict(f"no balanced class exceeds the per-class count ({per_class})", not over_class, f"over: {over_class or 'none'}"),
    ]
    notes = [f"Study column: the study's Table 9 sizes on {dataset}."] if study else []
    return Table(title="Table 9: the size of every transfer set",
                 method=f"Rows of each assembled transfer set: `size` is the largest over seeds, `size_seed{{k}}` each seed's; "
                 f"max_class is seed {reader.seeds[0]}'s.",
                 frame=frame, facts=facts, notes=notes)


BUILDERS: dict[str, Callable[[ReplicateReader, Mapping], Table]] = {
    "main": main_table,
    "table1": class_balance_table("table1"),
    "table2": class_balance_table("table2"),
    "table3": base_order_table,
    "table4": balancer_table,
    "table5": distance_table,
    "class_frequencies": class_frequency_table,
    "table9": size_table,
    "synthesis": synthesis_table,
}
assert tuple(BUILDERS) == TABLE_NAMES, "dfkd.analysis.study.TABLE_NAMES lists every builder"


# ---------------------------------------------------------------------------- output
def build_table(target_dir: Path, params: Mapping) -> tuple[Table, dict[str, Path]]:
    name = params.get("table")
    if name not in BUILDERS:
        raise DfkdError(f"unknown study table '{name}'; known: {sorted(BUILDERS)}.")
    if not params.get("rows"):
        raise DfkdError(f"study table '{name}' has no rows; list them under study.tables.{name}.rows in the config.")
    reader = ReplicateReader(target_dir, params.get("seeds", [0]))
    table = BUILDERS[name](reader, params)
    table.claims = holm(table.claims)  # the table's claims are one family
    if not table.verdicts:  # say so rather than print an empty list
        table.facts.append(verdict("the study's claims for this table", None,
                                   "its rows lack the pairs the claims compare; see the row names in config.yaml"))
    return table, reader.inputs


def shown_frame(table: Table) -> pd.DataFrame:
    """What the Markdown and LaTeX tables show: replicated columns as 'mean ± sd'."""
    return display_frame(table.frame, table.replicated) if table.replicated else table.frame


def render_markdown(table: Table, params: Mapping) -> str:
    seeds = ", ".join(map(str, params.get("seeds", [0])))
    text = io.StringIO()
    text.write(f"# {params['target']}: {table.title}\n\n{table.method} Seeds: {seeds}; every accuracy and "
               "distance is mean ± sample sd over them (the CSV and JSON keep each seed's value).\n\n")
    text.write(table.markdown if table.markdown is not None else markdown_table(shown_frame(table)))
    for note in table.notes:
        text.write(f"\n{note}\n")
    text.write(f"\nDoes the study's claim hold in our measurement? {METHOD} "
               f"min_effect = {params.get('min_effect')} points.\n\n")
    if table.claims:
        text.write(markdown_table(pd.DataFrame(claims_rows(table.claims))) + "\n")
    text.writelines(f"- {line}\n" for line in table.verdicts)
    return text.getvalue()


def write_table(target_dir: Path, params: Mapping, out_csv: Path, out_md: Path, out_json: Path,
                out_tex: Path | None = None) -> Table:
    from dfkd.analysis.export import latex_table

    table, inputs = build_table(target_dir, params)
    with atomic_path(out_csv) as tmp:
        table.frame.to_csv(tmp, index=False)
    with atomic_path(out_md) as tmp:
        tmp.write_text(render_markdown(table, params))
    if out_tex is not None:
        with atomic_path(out_tex) as tmp:
            tex = latex_table(shown_frame(table), f"{params['target']}: {table.title}",
                              f"tab:{params['target']}-{params['table']}")
            if table.claims:
                tex += "\n" + latex_table(pd.DataFrame(claims_rows(table.claims)), f"{params['target']}: claims of {table.title}",
                                          f"tab:{params['target']}-{params['table']}-claims")
            tmp.write_text(tex.replace("±", r"$\pm$"))
    records = table.frame.astype(object).where(table.frame.notna(), None).to_dict("records")
    write_json(out_json, {"table": params["table"], "title": table.title, "seeds": list(params.get("seeds", [0])),
                          "columns": list(table.frame.columns), "rows": records,
                          "claims": [claim.as_record() for claim in table.claims],
                          "verdicts": table.verdicts},
               make_provenance("table", dict(params), inputs=inputs))
    return table
