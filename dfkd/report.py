"""Stage `report`: the summary table of a target and the class-count charts of its sets.

Inputs: `teacher/metrics.json`, `transfer/{set}.counts.csv`, `students/{set}/metrics.json`,
`distance/{set}.json`. Outputs: `tables/summary.csv` and `.md` (one row per transfer set, plus
the teacher), `figures/class_counts_{set}.png`. Every number comes from those files.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from dfkd.artifacts import atomic_path, read_json
from dfkd.errors import DfkdError

SUMMARY_COLUMNS = [
    "transfer_set", "sources", "balanced", "size", "min_class", "max_class", "short_classes",
    "student_accuracy", "hausdorff", "directed_set_to_train", "directed_train_to_set",
]


def read_counts(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise DfkdError(f"class counts not found: {path}. Run `snakemake` to assemble the set.")
    frame = pd.read_csv(path)
    missing = {"class", "before", "after"} - set(frame.columns)
    if missing:
        raise DfkdError(f"{path} lacks columns {sorted(missing)}; it was not written by `dfkd assemble`.")
    return frame


def set_columns(recipe: Mapping, counts: pd.DataFrame) -> dict[str, Any]:
    """What a table shows of any transfer set: its sources, balance, size and class range."""
    return {
        "sources": "+".join(recipe["sources"]),
        "balanced": bool(recipe["balanced"]),
        "size": int(counts["after"].sum()),
        "min_class": int(counts["after"].min()),
        "max_class": int(counts["after"].max()),
    }


def summary_rows(target_dir: Path, sets: Mapping[str, Mapping], distilled: list[str], order: list[str] | None = None) -> pd.DataFrame:
    """One row per transfer set, in `order` (the config's; params JSON sorts its keys)."""
    rows = []
    for name in order or list(sets):
        recipe = sets[name]
        counts = read_counts(target_dir / "transfer" / f"{name}.counts.csv")
        distance = read_json(target_dir / "distance" / f"{name}.json")
        accuracy = None
        if name in distilled:
            accuracy = read_json(target_dir / "students" / name / "metrics.json")["test_accuracy"]
        rows.append({
            "transfer_set": name,
            **set_columns(recipe, counts),
            "short_classes": int(counts["short"].sum()) if "short" in counts else None,
            "student_accuracy": accuracy,
            "hausdorff": distance["hausdorff"],
            "directed_set_to_train": distance["directed_ab"],
            "directed_train_to_set": distance["directed_ba"],
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


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


def build_summary(target_dir: Path, params: Mapping, out_csv: Path, out_md: Path) -> pd.DataFrame:
    teacher = read_json(target_dir / "teacher" / "metrics.json")
    frame = summary_rows(target_dir, params["sets"], list(params["distilled"]), params.get("order"))
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    text = io.StringIO()
    text.write(f"# {params['target']}: students distilled on each transfer set\n\n")
    text.write(f"Teacher test accuracy: {teacher['test_accuracy']:.4f} "
               f"({teacher.get('epochs', '?')} epochs). Student accuracy is the final epoch's "
               "test accuracy; distances are exact Hausdorff distances in the teacher's "
               "penultimate feature space.\n\n")
    text.write(markdown_table(frame))
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
