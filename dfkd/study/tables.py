"""Stage `table`: one of the study's tables, rebuilt from a target's results.

Inputs (under `results/{target}/`): `transfer/{set}.counts.csv`, `distance/{set}.json`,
`students/{run}/metrics.json` of each row's set in each variant, `teacher/metrics.json`.
Outputs: `tables/{table}.csv` (the numbers), `.md` (title, how it was made, the table with the
study's published numbers beside ours, one verdict line per claim) and `.json` (the same rows
and verdicts with provenance: every file read, with its hash).

`params` is the config slice `dfkd.config.study_table_slice` makes: the target, the table
name, the study's name for the target's dataset, the variants, and the rows in order, each
`{"row": study row name, "set": transfer set, "recipe": its assemble slice}`.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from dfkd.artifacts import atomic_path, read_json, write_json
from dfkd.config import DEFAULT_VARIANT, run_name
from dfkd.errors import DfkdError
from dfkd.provenance import make_provenance
from dfkd.report import markdown_table, read_counts, set_columns
from dfkd.study import TABLE_NAMES
from dfkd.study.published import published, table_rows

FAMILIES = ("noise", "synthetic", "natural")  # the study's order, worst to best


@dataclass
class Table:
    title: str
    method: str
    frame: pd.DataFrame
    verdicts: list[str]
    notes: list[str] = field(default_factory=list)
    markdown: str | None = None  # a custom Markdown body (default: the frame)


class ResultReader:
    """Reads a target's result files and remembers each one it read (for provenance)."""

    def __init__(self, target_dir: Path):
        self.target_dir = Path(target_dir)
        self.inputs: dict[str, Path] = {}

    def _note(self, role: str, path: Path) -> Path:
        self.inputs[role] = path
        return path

    def counts(self, set_name: str) -> pd.DataFrame:
        return read_counts(self._note(f"counts/{set_name}", self.target_dir / "transfer" / f"{set_name}.counts.csv"))

    def distance(self, set_name: str) -> float:
        path = self._note(f"distance/{set_name}", self.target_dir / "distance" / f"{set_name}.json")
        return float(read_json(path)["hausdorff"])

    def accuracy(self, set_name: str, variant: str) -> float:
        """The student's final test accuracy, in percent."""
        run = run_name(set_name, variant)
        path = self._note(f"students/{run}", self.target_dir / "students" / run / "metrics.json")
        metrics = read_json(path)
        if "test_accuracy" not in metrics:
            raise DfkdError(f"{path} lacks test_accuracy; it was not written by `dfkd distill`.")
        return 100.0 * float(metrics["test_accuracy"])

    def teacher_accuracy(self) -> float:
        path = self._note("teacher", self.target_dir / "teacher" / "metrics.json")
        return 100.0 * float(read_json(path)["test_accuracy"])


# ---------------------------------------------------------------------------- helpers
def accuracy_columns(variants: list[str]) -> dict[str, str]:
    """variant -> column name: 'accuracy' for a single variant, 'accuracy_{variant}' for several."""
    if len(variants) == 1:
        return {variants[0]: "accuracy"}
    return {v: f"accuracy_{v}" for v in variants}


def describe_variants(params: Mapping) -> str:
    names = ", ".join("as configured" if v == DEFAULT_VARIANT else f"variant '{v}'" for v in params["variants"])
    return f"Students: {names} (see config.yaml `variants`); accuracy is the final epoch's test accuracy in percent."


def set_row(reader: ResultReader, row: Mapping, variants: list[str], with_distance: bool = True) -> dict[str, Any]:
    """The common columns of one row: its set, sources, size, class range, accuracies, distance."""
    record: dict[str, Any] = {
        "row": row["row"], "transfer_set": row["set"], **set_columns(row["recipe"], reader.counts(row["set"])),
    }
    for variant, column in accuracy_columns(variants).items():
        record[column] = reader.accuracy(row["set"], variant)
    if with_distance:
        record["hausdorff"] = reader.distance(row["set"])
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
    status = "not measured" if holds is None else ("holds" if holds else "does not hold")
    return f"{claim}: **{status}** ({evidence})"


def strictly_increasing(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def fmt(values: list[float], digits: int = 1) -> str:
    return " < ".join(f"{v:.{digits}f}" for v in values) if strictly_increasing(values) else ", ".join(f"{v:.{digits}f}" for v in values)


def _by_row(frame: pd.DataFrame) -> dict[str, Mapping]:
    return {str(r["row"]): r for r in frame.to_dict("records")}


def compare(rows: Mapping[str, Mapping], better: str, worse: str, column: str) -> tuple[bool | None, str]:
    if better not in rows or worse not in rows:
        return None, f"needs rows {better} and {worse}"
    a, b = rows[better][column], rows[worse][column]
    return a > b, f"{better} {a:.1f} vs {worse} {b:.1f}, {a - b:+.1f} points"


# ---------------------------------------------------------------------------- the tables
def main_table(reader: ResultReader, params: Mapping) -> Table:
    variants = list(params["variants"])
    frame = pd.DataFrame([set_row(reader, row, variants) for row in params["rows"]])
    rows = _by_row(frame)
    verdicts = []
    for variant, column in accuracy_columns(variants).items():
        label = "" if len(variants) == 1 else f" [{variant}]"
        for family in FAMILIES:
            holds, evidence = compare(rows, f"{family}_bal", family, column)
            if holds is not None:
                verdicts.append(verdict(f"balanced beats unbalanced for {family}{label}", holds, evidence))
        for suffix, kind in (("_bal", "balanced"), ("", "unbalanced")):
            names = [f + suffix for f in FAMILIES if f + suffix in rows]
            if len(names) >= 2:
                values = [rows[n][column] for n in names]
                verdicts.append(verdict(f"{' < '.join(names)} in accuracy ({kind}){label}", strictly_increasing(values), fmt(values)))
    teacher = reader.teacher_accuracy()
    return Table(
        title="Main table: students on every transfer set, with and without augmentation",
        method=f"Teacher test accuracy {teacher:.2f}%. {describe_variants(params)} Distances are exact "
        "Hausdorff distances to the training set in the teacher's penultimate feature space.",
        frame=frame, verdicts=verdicts,
        notes=["The study's main-paper table is not available (only its supplementary material), so no published column."],
    )


def class_balance_table(name: str) -> Callable[[ResultReader, Mapping], Table]:
    """Tables 1 and 2: fixed-size sets over k classes; accuracy and distance against k."""
    source_kind = "the training data" if name == "table1" else "arbitrary data (mixed, balanced)"

    def build(reader: ResultReader, params: Mapping) -> Table:
        variants = list(params["variants"])
        records = []
        for row in params["rows"]:
            record = set_row(reader, row, variants)
            record["classes"] = row["recipe"]["classes"] or params["num_classes"]
            records.append(record)
        frame = pd.DataFrame(records)
        frame.insert(2, "classes", frame.pop("classes"))
        frame, notes = add_study_columns(frame, name, {"accuracy": "accuracy", "distance": "distance"})
        ordered = frame.sort_values("classes", kind="stable")
        column = accuracy_columns(variants)[variants[0]]
        acc, dist = list(ordered[column]), list(ordered["hausdorff"])
        verdicts = [
            verdict("accuracy rises with the number of classes", strictly_increasing(acc), fmt(acc)),
            verdict("distance to the training set falls with the number of classes", strictly_increasing(dist[::-1]), ", ".join(f"{d:.2f}" for d in dist)),
        ]
        return Table(
            title=f"Table {name.removeprefix('table')}: class balance of a fixed-size transfer set from {source_kind}",
            method="Each row keeps classes 0..k-1 of the teacher's labels, split evenly over a fixed size "
            f"(short classes stay short: see size). {describe_variants(params)}",
            frame=frame, verdicts=verdicts, notes=notes,
        )

    return build


def base_order_table(reader: ResultReader, params: Mapping) -> Table:
    """Table 3: A, A+B, B, B+A."""
    variants = list(params["variants"])
    frame = pd.DataFrame([set_row(reader, row, variants) for row in params["rows"]])
    frame, notes = add_study_columns(frame, "table3", {"accuracy": "accuracy"})
    rows, column = _by_row(frame), accuracy_columns(variants)[variants[0]]
    verdicts = [
        verdict("balancing base A helps (A+B > A)", *compare(rows, "A+B", "A", column)),
        verdict("balancing base B helps (B+A > B)", *compare(rows, "B+A", "B", column)),
        verdict("the base matters: the better base wins balanced (B+A > A+B)", *compare(rows, "B+A", "A+B", column)),
    ]
    return Table(
        title="Table 3: the base transfer set matters (order of mixing)",
        method=f"A and B alone (unbalanced) and each balanced with the other as filler. {describe_variants(params)}",
        frame=frame, verdicts=verdicts, notes=notes,
    )


def balancer_table(reader: ResultReader, params: Mapping) -> Table:
    """Table 4: unbalanced bases x the set added to balance them."""
    variants = list(params["variants"])
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
    verdicts = []
    for base, group in frame.groupby("base", sort=False):
        acc = dict(zip(group["balancer"], group[column]))
        if "none" not in acc or len(acc) < 2:
            verdicts.append(verdict(f"balancing base {base} helps", None, "needs its 'none' row and a balancer"))
            continue
        added = {k: v for k, v in acc.items() if k != "none"}
        beaten = [k for k, v in added.items() if v <= acc["none"]]
        verdicts.append(verdict(
            f"every balancer beats the unbalanced {base} base", not beaten,
            f"none {acc['none']:.1f}; " + ", ".join(f"{k} {v:.1f}" for k, v in added.items())))
        if "natural" in added:
            best = max(added, key=added.get)
            verdicts.append(verdict(f"natural data is the best balancer for {base}", best == "natural", f"best: {best} {added[best]:.1f}"))
    study_column = next((c for c in frame.columns if c.startswith("study")), None)
    return Table(
        title="Table 4: which set is added to balance an unbalanced base",
        method="Each base alone (none) and balanced with each filler; sets never exceed the training-set "
        f"size. {describe_variants(params)}",
        frame=frame, verdicts=verdicts, notes=notes,
        markdown=_pivot_markdown(frame, column, study_column),
    )


def _pivot_markdown(frame: pd.DataFrame, column: str, study_column: str | None) -> str:
    """Bases as rows, balancers as columns, cells 'ours (study)'."""
    def cell(record: Mapping) -> str:
        text = f"{record[column]:.2f}"
        if study_column and record.get(study_column) is not None and not pd.isna(record[study_column]):
            text += f" ({record[study_column]:.2f})"
        return text

    balancers = list(dict.fromkeys(frame["balancer"]))
    grid = {b: {r["balancer"]: cell(r) for r in g.to_dict("records")} for b, g in frame.groupby("base", sort=False)}
    pivot = pd.DataFrame([{"base": b, **{k: row.get(k, "-") for k in balancers}} for b, row in grid.items()])
    legend = "Cells: our accuracy" + (f" ({study_column.removesuffix(' accuracy')})" if study_column else "") + ".\n\n"
    return legend + markdown_table(pivot)


def distance_table(reader: ResultReader, params: Mapping) -> Table:
    """Table 5: accuracy against feature distance for noise, synthetic, natural."""
    variants = list(params["variants"])
    frame = pd.DataFrame([set_row(reader, row, variants) for row in params["rows"]])
    frame, notes = add_study_columns(frame, "table5", {"accuracy": "accuracy", "distance": "distance"})
    column = accuracy_columns(variants)[variants[0]]
    ordered = frame.sort_values("hausdorff", kind="stable")
    acc = list(ordered[column])
    pairs = ", ".join(f"{r} {a:.1f}% at {d:.2f}" for r, a, d in zip(ordered["row"], ordered[column], ordered["hausdorff"]))
    rows = _by_row(frame)
    names = [f for f in FAMILIES if f in rows]
    verdicts = [
        verdict("the closer the set to the training data, the better the student", strictly_increasing(acc[::-1]), pairs),
        verdict(f"{' < '.join(names)} in accuracy", strictly_increasing([rows[n][column] for n in names]), fmt([rows[n][column] for n in names])),
    ]
    return Table(
        title="Table 5: distillation accuracy against feature distance",
        method=f"{describe_variants(params)} Distance: exact Hausdorff distance to the training set in the teacher's penultimate features.",
        frame=frame, verdicts=verdicts, notes=notes,
    )


def effective_classes(counts: np.ndarray) -> float:
    """exp(entropy) of the class distribution: K when perfectly even, 1 when all in one class."""
    p = counts[counts > 0] / counts.sum() if counts.sum() else np.array([1.0])
    return float(math.exp(-(p * np.log(p)).sum()))


def class_frequency_table(reader: ResultReader, params: Mapping) -> Table:
    """Tables 6 to 8 (and Figures 1 to 3): per-class counts before and after balancing."""
    dataset = params.get("dataset")
    study = published()["class_frequencies"].get(dataset, {}) if params["num_classes"] == 10 else {}
    records, verdicts = [], []
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
        verdicts.append(verdict(
            f"balancing evens the classes of {row['row']} ({row['set']})", e_after > e_before,
            f"effective classes {e_before:.2f} -> {e_after:.2f} of {len(counts)}; short after balancing: {short or 'none'}"))
    frame = pd.DataFrame(records)
    notes = [f"Study columns: the study's published counts on {dataset} (its Tables 6 to 8)."] if study else []
    return Table(
        title="Class frequencies before and after balancing (the study's Tables 6 to 8, Figures 1 to 3)",
        method="Teacher class counts of each family's base source (unbalanced) and of its balanced set "
        "(Algorithm 1); the bar charts are figures/class_counts_{set}.png. Effective classes = exp(entropy).",
        frame=frame, verdicts=verdicts, notes=notes,
    )


def size_table(reader: ResultReader, params: Mapping) -> Table:
    """Table 9: the size of every transfer set."""
    dataset = params.get("dataset")
    study = published()["table9"].get(dataset, {})
    records = []
    for row in params["rows"]:
        columns = set_columns(row["recipe"], reader.counts(row["set"]))
        records.append({
            "row": row["row"], "transfer_set": row["set"],
            **{key: columns[key] for key in ("sources", "balanced", "size", "max_class")},
            **({f"study ({dataset}) size": study.get(row["row"])} if study else {}),
        })
    frame = pd.DataFrame(records)
    total, per_class = params["total"], params["per_class"]
    over_total = frame[frame["size"] > total]["transfer_set"].tolist() if total else []
    over_class = frame[frame["balanced"] & (frame["max_class"] > per_class)]["transfer_set"].tolist() if per_class else []
    verdicts = [
        verdict(f"no transfer set exceeds the training-set size ({total})", not over_total, f"largest {frame['size'].max()}; over: {over_total or 'none'}"),
        verdict(f"no balanced class exceeds the per-class count ({per_class})", not over_class, f"over: {over_class or 'none'}"),
    ]
    notes = [f"Study column: the study's Table 9 sizes on {dataset}."] if study else []
    return Table(title="Table 9: the size of every transfer set", method="Rows of each assembled transfer set.",
                 frame=frame, verdicts=verdicts, notes=notes)


BUILDERS: dict[str, Callable[[ResultReader, Mapping], Table]] = {
    "main": main_table,
    "table1": class_balance_table("table1"),
    "table2": class_balance_table("table2"),
    "table3": base_order_table,
    "table4": balancer_table,
    "table5": distance_table,
    "class_frequencies": class_frequency_table,
    "table9": size_table,
}
assert tuple(BUILDERS) == TABLE_NAMES, "dfkd.study.TABLE_NAMES lists every builder"


# ---------------------------------------------------------------------------- output
def build_table(target_dir: Path, params: Mapping) -> tuple[Table, dict[str, Path]]:
    name = params.get("table")
    if name not in BUILDERS:
        raise DfkdError(f"unknown study table '{name}'; known: {sorted(BUILDERS)}.")
    if not params.get("rows"):
        raise DfkdError(f"study table '{name}' has no rows; list them under study.tables.{name}.rows in the config.")
    reader = ResultReader(target_dir)
    table = BUILDERS[name](reader, params)
    if not table.verdicts:  # say so rather than print an empty list
        table.verdicts.append(verdict("the study's claims for this table", None,
                                      "its rows lack the pairs the claims compare; see the row names in config.yaml"))
    return table, reader.inputs


def render_markdown(table: Table, params: Mapping) -> str:
    text = io.StringIO()
    text.write(f"# {params['target']}: {table.title}\n\n{table.method}\n\n")
    text.write(table.markdown if table.markdown is not None else markdown_table(table.frame))
    for note in table.notes:
        text.write(f"\n{note}\n")
    text.write("\nDoes the study's claim hold in our measurement?\n\n")
    text.writelines(f"- {line}\n" for line in table.verdicts)
    return text.getvalue()


def write_table(target_dir: Path, params: Mapping, out_csv: Path, out_md: Path, out_json: Path) -> Table:
    table, inputs = build_table(target_dir, params)
    with atomic_path(out_csv) as tmp:
        table.frame.to_csv(tmp, index=False)
    with atomic_path(out_md) as tmp:
        tmp.write_text(render_markdown(table, params))
    records = table.frame.astype(object).where(table.frame.notna(), None).to_dict("records")
    write_json(out_json, {"table": params["table"], "title": table.title, "columns": list(table.frame.columns),
                          "rows": records, "verdicts": table.verdicts},
               make_provenance("table", dict(params), inputs=inputs))
    return table
