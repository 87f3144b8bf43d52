"""Stage `report`: the summary table of a target and the class-count charts of its sets.

Inputs: `teacher/metrics.json`, and for every seed k of config `seeds`:
`transfer/{set}/seed{k}.counts.csv`, `students/{set}/seed{k}/metrics.json`,
`distance/{set}/seed{k}.json` (dfkd.io.layout). Outputs: `tables/summary.csv` (one row per
transfer set: accuracy and distances as mean, sample sd, n and each seed's value) and `.md`
(mean ± sd, the study's claims decided from paired seeds, and a line for each base source that the
teacher puts mostly in one class, `dfkd.stages.collapse`), `figures/class_counts_{set}.png`.
Every number comes from those files.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from dfkd.io.artifacts import atomic_path
from dfkd.errors import DfkdError
from dfkd.analysis.replicates import ReplicateReader, display_frame, family_claims, read_counts, replicate_columns
from dfkd.analysis.stats import METHOD, holm

SET_COLUMNS = ["transfer_set", "sources", "balanced", "size", "min_class", "max_class", "short_classes"]
REPLICATED = ["accuracy", "hausdorff", "directed_set_to_train", "directed_train_to_set"]
SCORE_TEXT = {
    "accuracy": "Student accuracy is the final epoch's test accuracy in percent; ",
    "teacher_agreement": "No test split: teacher_agreement is the share (percent) of held-out transfer rows "
                         "(10% of each set, never trained on) where the final student's class is the teacher's; ",
}
DISTANCE_TEXT = "distances are exact Hausdorff distances in the teacher's penultimate feature space; "
NO_DISTANCE_TEXT = "no train split, so no distances to the training data (quality/{set}.json holds the data-free scores); "
DISTANCE_KEYS = {"hausdorff": "hausdorff", "directed_set_to_train": "directed_ab", "directed_train_to_set": "directed_ba"}


def set_columns(recipe: Mapping, counts: pd.DataFrame) -> dict[str, Any]:
    """What a table shows of any transfer set: its sources, balance, size and class range."""
    return {
        "sources": "+".join(recipe["sources"]),
        "balanced": bool(recipe["balanced"]),
        "size": int(counts["after"].sum()),
        "min_class": int(counts["after"].min()),
        "max_class": int(counts["after"].max()),
    }


def agreements(reader: ReplicateReader, set_name: str) -> dict[int, float]:
    """seed -> the default student's agreement with the teacher on held-out transfer rows, in
    percent (a target without a test split; dfkd.stages.distill)."""
    from dfkd.io import layout
    from dfkd.io.artifacts import read_json

    values = {}
    for seed in reader.seeds:
        path = reader._note(layout.student_metrics(set_name, seed))
        metrics = read_json(path)
        if "teacher_agreement" not in metrics:
            raise DfkdError(f"{path} lacks teacher_agreement; re-run its distill job (the target has no test split).")
        values[seed] = 100.0 * float(metrics["teacher_agreement"])
    return values


def summary_rows(reader: ReplicateReader, sets: Mapping[str, Mapping], distilled: list[str],
                 order: list[str] | None = None, *, score: str = "accuracy", distances: bool = True) -> pd.DataFrame:
    """One row per transfer set, in `order` (the config's; params JSON sorts its keys). `score`
    'teacher_agreement' (no test split) replaces accuracy; `distances` False (no train split)
    leaves the distance columns out."""
    rows = []
    for name in order or list(sets):
        counts = reader.counts(name)
        record = {"transfer_set": name, **set_columns(sets[name], counts),
                  "short_classes": int(counts["short"].sum()) if "short" in counts else None}
        if name not in distilled:
            values = {}
        else:
            values = agreements(reader, name) if score == "teacher_agreement" else reader.accuracies(name, "default")
        record.update(replicate_columns(score, values))
        for column, key in DISTANCE_KEYS.items() if distances else ():
            record.update(replicate_columns(column, reader.distances(name, key)))
        rows.append(record)
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return "-"
        if isinstance(value, float):
            return float_format.format(value)
        return str(value)

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def teacher_line(teacher: Mapping[str, Any], min_accuracy: float | None = None) -> str:
    """The teacher's accuracy, and a loud warning below the configured min_accuracy (or the one
    recorded when it was trained, when the summary is given no threshold)."""
    from dfkd.stages.teacher import teacher_warning

    if teacher.get("test_accuracy") is None:  # a teacher from outside, on a target without a test split
        return (f"Teacher: {teacher.get('arch', '?')} from {teacher.get('teacher_file', 'a file')} "
                f"({teacher.get('format', '?')}; sha256 {str(teacher.get('teacher_sha256', '?'))[:12]}); no test "
                "split, so no test accuracy.")
    origin = (f"loaded from {teacher.get('teacher_file')}" if "format" in teacher
              else f"{teacher.get('epochs', '?')} epochs")
    line = (f"Teacher test accuracy: {100 * teacher['test_accuracy']:.2f}% "
            f"({origin}; one teacher, fixed across seeds).")
    warning = teacher_warning(teacher, min_accuracy) if min_accuracy is not None else teacher.get("warning")
    if warning:
        line += f"\n\n**WARNING: {warning}**"
    return line


def fill_section(target_dir: Path, sources: list[str]) -> str:
    """Per fill source (data/{source}.fill.json): each class's rows kept and the draws it took to
    fill, or that the budget ran out first."""
    from dfkd.io.artifacts import read_json

    text = io.StringIO()
    for source in sources:
        report = read_json(Path(target_dir) / "data" / f"{source}.fill.json")
        rate = report.get("images_per_second")
        text.write(f"\nFill source `{source}` ({report['generator']['kind']} generator, seed {report['seed']}): "
                   f"{report['drawn']:,} images drawn of a budget of {report['budget']}, stopped: {report['stopped']}"
                   f"{f', {rate:,.0f} images/s' if rate else ''}; short classes: {report['short_classes'] or 'none'}.\n\n")
        rows = pd.DataFrame([{"class": c["class"], "kept": c["kept"], "target": report["per_class"],
                              "draws": c["draws"] if c["full"] else None,
                              "status": "full" if c["full"] else f"short: budget spent after {c['draws']:,} draws"}
                             for c in report["classes"]])
        text.write(markdown_table(rows, "{:.0f}"))
    return text.getvalue()


def synthesis_section(target_dir: Path, reports: list[str]) -> str:
    """Per synthesis report (data/{source}.synthesis.json, or data/sets/{set}/seed{k}/{source}.synthesis.json
    for a class-conditional fill): what was made, what was kept, how often the teacher's label of the
    stored image is the class it was made for, and the cost."""
    from dfkd.io.artifacts import read_json

    rows = []
    for relative in reports:
        report = read_json(Path(target_dir) / relative)
        missing = {c["class"]: c["missing"] for c in report["classes"] if c.get("missing")}
        rows.append({
            "file": relative.removeprefix("data/").removesuffix(".synthesis.json"),
            "synthesizer": report["synthesizer"], "seed": report["seed"],
            "classes made for": ", ".join(f"{c}: {n:,}" for c, n in missing.items()) if "balance" in report
            else "all (equal counts)",
            "made": f"{report['made']:,}", "kept": f"{report['kept']:,}",
            "still short": ", ".join(map(str, report.get("short_classes") or [])) or "none",
            "label = class made for": "" if report["made_for_agreement"] is None
            else f"{100 * report['made_for_agreement']:.1f}%",
            "mean KL": report["mean_kl"],
            "s per 1,000": report["seconds_per_1000"],
        })
    return markdown_table(pd.DataFrame(rows), "{:.3f}")


def collapse_lines(reader: ReplicateReader, sets: Mapping[str, Mapping], order: list[str]) -> list[str]:
    """One line per base source that the teacher puts mostly in one class (`dfkd.stages.collapse`), from the
    `before` counts of the sets built on it (the teacher's labels of all the base's rows)."""
    from dfkd.stages.collapse import collapse_line

    built_on: dict[str, list[str]] = {}
    for name in order:
        built_on.setdefault(sets[name]["sources"][0], []).append(name)
    lines = []
    for base, names in built_on.items():
        line = collapse_line(f"source `{base}` (the base of {', '.join(names)})",
                             reader.counts(names[0])["before"].to_numpy())
        if line is not None:
            lines.append(line)
    return lines


def build_summary(target_dir: Path, params: Mapping, out_csv: Path, out_md: Path) -> pd.DataFrame:
    seeds = [int(s) for s in params.get("seeds", [0])]
    reader = ReplicateReader(Path(target_dir), seeds)
    teacher = reader.teacher()
    score, distances = params.get("score", "accuracy"), params.get("distances", True)
    frame = summary_rows(reader, params["sets"], list(params["distilled"]), params.get("order"),
                         score=score, distances=distances)
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    rows = {r["transfer_set"]: r for r in frame.to_dict("records")}
    claims = holm(family_claims(rows, score, seeds, min_effect=params.get("min_effect")))
    text = io.StringIO()
    text.write(f"# {params['target']}: students distilled on each transfer set\n\n")
    text.write(f"{teacher_line(teacher, params.get('teacher_min_accuracy'))} Seeds: {', '.join(map(str, seeds))} (each seed re-draws the "
               "transfer set's random picks and the student's initial weights, shuffling and augmentation). "
               f"{SCORE_TEXT[score]}{DISTANCE_TEXT if distances else NO_DISTANCE_TEXT}size and class counts "
               f"are seed {seeds[0]}'s. Every value is mean ± sample sd over the seeds; the CSV keeps "
               "each seed's value.\n\n")
    text.write(markdown_table(display_frame(frame, [score, *REPLICATED[1:]], {score: 2, "hausdorff": 2})))
    if claims:
        text.write(f"\nThe study's claims, decided from paired seeds. {METHOD}\n\n")
        text.writelines(f"- {claim.line()}\n" for claim in claims)
    collapses = collapse_lines(reader, params["sets"], params.get("order") or list(params["sets"]))
    if collapses:
        text.write("\nSources the teacher sees as mostly one class:\n\n")
        text.writelines(f"- {line}\n" for line in collapses)
    if params.get("fill_sources"):
        text.write("\nGenerators drawn from until each class is full (draws: images drawn when the class filled):\n")
        text.write(fill_section(Path(target_dir), list(params["fill_sources"])))
    if params.get("synthesis_reports"):
        text.write("\nImages synthesised from the teacher (a conditional fill makes only the rows its set's earlier "
                   "sources leave short, per class; the teacher re-labels the stored uint8 images):\n\n")
        text.write(synthesis_section(Path(target_dir), list(params["synthesis_reports"])))
    with atomic_path(out_md) as tmp:
        tmp.write_text(text.getvalue())
    return frame


def plot_counts(counts_path: Path, out: Path, title: str) -> None:
    """Grouped bars of per-class counts before and after balancing (readable up to 100 classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = read_counts(counts_path)
    k = len(counts)
    width = max(6.0, min(24.0, 0.25 * k + 3))
    fig, ax = plt.subplots(figsize=(width, 3.5), dpi=110)
    x = np.arange(k)
    ax.bar(x - 0.2, counts["before"], width=0.4, label="before (base source)", color="#999999")
    ax.bar(x + 0.2, counts["after"], width=0.4, label="after balancing", color="#1f77b4")
    ax.set_xlabel("teacher class")
    ax.set_ylabel("samples")
    ax.set_title(title)
    step = 1 if k <= 20 else 5 if k <= 100 else 10
    ax.set_xticks(x[::step])
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
