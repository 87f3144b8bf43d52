"""Error-bar figures of the study tables, drawn from a table's JSON (dfkd.analysis.study.tables).

- `main`: accuracy per transfer set, one bar per variant, error bars = sample sd over seeds;
- `table1`, `table2`: accuracy and distance against the number of classes, with error bars;
- `table5`: accuracy against distance, error bars on both axes.
Bars and points are means; n is in the legend. Nothing is computed here that the table's JSON
does not hold.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from dfkd.io.artifacts import atomic_path, read_json
from dfkd.errors import DfkdError
from dfkd.analysis.study import FIGURE_TABLES


def accuracy_bases(columns: Sequence[str]) -> list[str]:
    """The table's accuracy columns ('accuracy' or 'accuracy_{variant}'), from their _mean columns."""
    return [c.removesuffix("_mean") for c in columns if c.startswith("accuracy") and c.endswith("_mean")]


def _values(rows: Sequence[Mapping[str, Any]], base: str) -> tuple[list[float], list[float], int]:
    means = [float(r[f"{base}_mean"]) if r.get(f"{base}_mean") is not None else math.nan for r in rows]
    sds = [float(r[f"{base}_sd"]) if r.get(f"{base}_sd") is not None else 0.0 for r in rows]
    n = min((int(r.get(f"{base}_n") or 0) for r in rows), default=0)
    return means, sds, n


def plot_table(table_json: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    table = read_json(table_json)
    name, rows, columns = table.get("table"), table.get("rows") or [], table.get("columns") or []
    if name not in FIGURE_TABLES:
        raise DfkdError(f"{table_json}: table '{name}' has no error-bar figure; figures exist for {list(FIGURE_TABLES)}.")
    if not rows:
        raise DfkdError(f"{table_json} holds no rows; rebuild it with `snakemake all_tables`.")
    bases = accuracy_bases(columns)
    if name == "main":
        fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 3.8), dpi=110)
        x = np.arange(len(rows))
        width = 0.8 / max(1, len(bases))
        for i, base in enumerate(bases):
            means, sds, n = _values(rows, base)
            label = (base.removeprefix("accuracy_") if base != "accuracy" else "as configured") + f" (n={n})"
            ax.bar(x + (i - (len(bases) - 1) / 2) * width, means, width, yerr=sds, capsize=3, label=label)
        ax.set_xticks(x)
        ax.set_xticklabels([str(r["row"]) for r in rows], rotation=30, ha="right")
        ax.set_ylabel("student test accuracy (%)")
        ax.legend(frameon=False, fontsize=8)
    elif name in ("table1", "table2"):
        rows = sorted(rows, key=lambda r: r["classes"])
        k = [r["classes"] for r in rows]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
        means, sds, n = _values(rows, bases[0])
        left.errorbar(k, means, yerr=sds, marker="o", capsize=3, label=f"ours (n={n})")
        dist, dsd, dn = _values(rows, "hausdorff")
        right.errorbar(k, dist, yerr=dsd, marker="o", capsize=3, color="#d62728", label=f"ours (n={dn})")
        left.set_ylabel("student test accuracy (%)")
        right.set_ylabel("Hausdorff distance to the training set")
        for axis in (left, right):
            axis.set_xlabel("number of classes k")
            axis.set_xticks(k)
            axis.legend(frameon=False, fontsize=8)
    else:  # table5
        means, sds, n = _values(rows, bases[0])
        dist, dsd, _ = _values(rows, "hausdorff")
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
        ax.errorbar(dist, means, xerr=dsd, yerr=sds, fmt="o", capsize=3, label=f"ours (n={n})")
        for r, xv, yv in zip(rows, dist, means):
            ax.annotate(str(r["row"]), (xv, yv), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel("Hausdorff distance to the training set")
        ax.set_ylabel("student test accuracy (%)")
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(str(table.get("title", name)), fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
