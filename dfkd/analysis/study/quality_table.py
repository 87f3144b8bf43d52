"""Stage `quality-table`: "What makes a better transfer set?" Scores against student accuracy.

Inputs (under `results/{target}/`): `quality/{set}.json` of every set (dfkd.stages.quality: data-free
scores from the teacher's outputs on the set, and distances to the training features), and
`students/{run}/seed{k}/metrics.json` of every run the config distils (all sets, variants,
seeds; dfkd.io.layout). Outputs: `tables/quality.csv` (one row per run: its set's scores and
distances, accuracy mean/sd/n and each seed's), `.md` (the rank correlations and the verdict),
`.json` (rows, correlations, verdicts, provenance), `.tex` (the correlations), and one scatter
figure per score, `figures/quality_{metric}.png`.

Correlations are taken per student variant, over the sets distilled in that variant: Spearman
and Kendall between each metric and the mean accuracy over seeds, with a bootstrap 95% interval
(dfkd.analysis.rank). The verdict (dfkd.analysis.rank.verdict) says whether some data-free score ranks transfer
sets at least as well as the Hausdorff distance does.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from dfkd.io import layout
from dfkd.io.artifacts import atomic_path, read_json, write_json
from dfkd.errors import DfkdError
from dfkd.io.provenance import make_provenance
from dfkd.analysis.rank import rank_correlation, verdict
from dfkd.analysis.replicates import ReplicateReader, replicate_columns
from dfkd.analysis.report import markdown_table

from dfkd.analysis.study import QUALITY_METRICS


def quality_rows(reader: ReplicateReader, runs: list[Mapping]) -> pd.DataFrame:
    """One row per run {set, variant}: the set's metrics and the run's accuracy over seeds."""
    records, cache = [], {}
    for run in runs:
        name, variant = run["set"], run["variant"]
        if name not in cache:
            path = reader.target_dir / "quality" / f"{name}.json"
            reader.inputs[f"quality/{name}.json"] = path
            cache[name] = read_json(path)
        quality = cache[name]
        metrics = quality.get("scores", {}) | quality.get("distances", {})
        record = {"transfer_set": name, "variant": variant, "size": quality.get("n")}
        record.update({m: metrics.get(m, np.nan) for m in QUALITY_METRICS})
        record.update(replicate_columns("accuracy", reader.accuracies(name, variant)))
        records.append(record)
    return pd.DataFrame(records)


def correlations(frame: pd.DataFrame, resamples: int = 2000) -> tuple[pd.DataFrame, list[dict]]:
    """Per variant and metric: Spearman and Kendall with the mean accuracy (bootstrap CIs),
    and per variant the verdict of dfkd.analysis.rank."""
    records, verdicts = [], []
    for variant, group in frame.groupby("variant", sort=False):
        accuracy = group["accuracy_mean"].to_numpy(float)
        values = {m: group[m].to_numpy(float) for m in QUALITY_METRICS if np.isfinite(group[m].to_numpy(float)).any()}
        for metric, x in values.items():
            r = rank_correlation(x, accuracy, resamples=resamples)
            records.append({"variant": variant, "metric": metric, "sets": r["n"],
                            "spearman": r["spearman"], "spearman_low": r["spearman_ci"][0], "spearman_high": r["spearman_ci"][1],
                            "kendall": r["kendall"], "kendall_low": r["kendall_ci"][0], "kendall_high": r["kendall_ci"][1]})
        result = verdict(values, accuracy, resamples=resamples)
        verdicts.append({"variant": variant, "sets": int(len(group)), **result})
    return pd.DataFrame(records), verdicts


def verdict_line(result: Mapping) -> str:
    """The verdict as decided by the difference's bootstrap interval, with the point estimates."""
    if result["holds"] is None:
        return f"[{result['variant']}] {result['statement']}: **not measured** (too few sets with a correlation)"
    low, high = result["difference_ci"]
    point = "at least as high" if result["holds"] else "lower"
    return (f"[{result['variant']}] {result['statement']}: **{result['label']}** over {result['sets']} sets "
            f"(best data-free score: {result['best']}, directed Spearman {result['best_rho']:+.2f}; Hausdorff "
            f"{result['reference_rho']:+.2f}; difference {result['difference']:+.2f} ({point} on the point "
            f"estimates), bootstrap 95% CI [{low:+.2f}, {high:+.2f}], optimistic: the best score is chosen "
            "after seeing the data)")


def plot_scatter(frame: pd.DataFrame, metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
    for variant, group in frame.groupby("variant", sort=False):
        ax.errorbar(group[metric], group["accuracy_mean"], yerr=group["accuracy_sd"].fillna(0), fmt="o",
                    capsize=3, label=f"{variant} (n={int(group['accuracy_n'].min())} seeds)")
        for name, x, y in zip(group["transfer_set"], group[metric], group["accuracy_mean"]):
            ax.annotate(str(name), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel(metric)
    ax.set_ylabel("student test accuracy (%, mean ± sd)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_quality_table(target_dir: Path, params: Mapping, out_csv: Path, out_md: Path, out_json: Path,
                        out_tex: Path, figures_dir: Path) -> pd.DataFrame:
    from dfkd.analysis.export import latex_table

    runs = list(params.get("runs") or [])
    if not runs:
        raise DfkdError("the quality table has no runs; it needs distilled transfer sets in the config.")
    reader = ReplicateReader(Path(target_dir), params.get("seeds", [0]))
    frame = quality_rows(reader, runs)
    corr, verdicts = correlations(frame, int(params.get("resamples", 2000)))
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    shown = corr.copy()
    for kind in ("spearman", "kendall"):
        shown[kind] = [f"{v:+.2f} [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(v) else "-"
                       for v, lo, hi in zip(corr[kind], corr[f"{kind}_low"], corr[f"{kind}_high"])]
        shown = shown.drop(columns=[f"{kind}_low", f"{kind}_high"])
    text = io.StringIO()
    text.write(f"# {params['target']}: What makes a better transfer set?\n\n"
               "Data-free scores use only the teacher's outputs on each set (labels, logits, features); "
               "distances use the training features too. Accuracy is the mean over seeds "
               f"{', '.join(map(str, reader.seeds))}. Per student variant, each metric's Spearman and Kendall "
               "rank correlation with mean accuracy over the sets, with a bootstrap 95% interval over sets "
               "(a distance should correlate negatively, a score positively; see dfkd/stages/quality.py DIRECTIONS).\n\n")
    text.write(markdown_table(shown))
    text.write("\nVerdicts:\n\n")
    text.writelines(f"- {verdict_line(v)}\n" for v in verdicts)
    with atomic_path(out_md) as tmp:
        tmp.write_text(text.getvalue())
    with atomic_path(out_tex) as tmp:
        tmp.write_text(latex_table(shown, f"{params['target']}: rank correlation of each metric with mean student accuracy",
                                   f"tab:{params['target']}-quality", float_format="{:.2f}"))
    clean = lambda df: df.astype(object).where(df.notna(), None).to_dict("records")  # noqa: E731
    write_json(out_json, {"table": "quality", "seeds": reader.seeds, "rows": clean(frame), "correlations": clean(corr),
                          "verdicts": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                                       for r in verdicts]},
               make_provenance("table", dict(params), inputs=reader.inputs))
    for metric in QUALITY_METRICS:  # a metric no set has (no training data) draws an empty, labelled figure
        plot_scatter(frame, metric, Path(figures_dir) / f"quality_{metric}.png")
    return frame
