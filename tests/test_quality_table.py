"""The `quality` table from hand-written quality files and students: rows, correlations, verdicts."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dfkd.analysis.study import QUALITY_METRICS
from dfkd.analysis.study.quality_table import write_quality_table

SEEDS = (0, 1, 2)
# set -> (accuracy per seed, fill, hausdorff): fill ranks the sets as accuracy does, the
# Hausdorff distance ranks two of them the wrong way round
SETS = {
    "noise": ([0.30, 0.35, 0.32], 0.4, 20.0),
    "synthetic": ([0.60, 0.62, 0.58], 0.6, 15.0),
    "natural": ([0.75, 0.74, 0.76], 0.8, 17.0),
    "natural_bal": ([0.78, 0.79, 0.77], 0.9, 16.0),
}


def write(root, relative, payload):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


@pytest.fixture()
def results(tmp_path):
    root = tmp_path / "fm"
    for name, (accuracies, fill, hausdorff) in SETS.items():
        scores = {m: 1.0 for m in QUALITY_METRICS[:7]} | {"fill": fill}
        write(root, f"quality/{name}.json", {"n": 100, "scores": scores,
                                             "distances": {"hausdorff": hausdorff, "coverage": fill / 2}})
        for seed, accuracy in zip(SEEDS, accuracies):
            write(root, f"students/{name}/seed{seed}/metrics.json", {"test_accuracy": accuracy})
            write(root, f"students/{name}.noaug/seed{seed}/metrics.json", {"test_accuracy": accuracy - 0.01})
    return root


def test_rows_correlations_and_verdict(results, tmp_path):
    runs = [{"set": s, "variant": v} for v in ("default", "noaug") for s in SETS]
    params = {"target": "fm", "seeds": list(SEEDS), "runs": runs, "resamples": 200}
    out = tmp_path / "out"
    frame = write_quality_table(results, params, out / "q.csv", out / "q.md", out / "q.json", out / "q.tex", out / "fig")
    assert len(frame) == 8 and frame["accuracy_n"].tolist() == [3] * 8
    assert frame.set_index(["transfer_set", "variant"]).loc[("natural", "default"), "accuracy_mean"] == pytest.approx(75.0)
    record = json.loads((out / "q.json").read_text())
    corr = pd.DataFrame(record["correlations"]).set_index(["variant", "metric"])
    mean_accuracy = [100 * np.mean(a) for a, _, _ in SETS.values()]
    for metric, values in (("fill", [f for _, f, _ in SETS.values()]), ("hausdorff", [h for _, _, h in SETS.values()])):
        assert corr.loc[("default", metric), "spearman"] == pytest.approx(stats.spearmanr(values, mean_accuracy).statistic)
        assert corr.loc[("default", metric), "kendall"] == pytest.approx(stats.kendalltau(values, mean_accuracy).statistic)
        assert corr.loc[("default", metric), "sets"] == 4
    assert ("default", "mean_margin") not in corr.index or np.isnan(corr.loc[("default", "mean_margin"), "spearman"])
    verdicts = {v["variant"]: v for v in record["verdicts"]}
    assert verdicts["default"]["holds"] is True and verdicts["default"]["best"] == "fill"
    assert verdicts["default"]["label"] == "holds" and verdicts["default"]["difference_ci"][0] >= 0
    markdown = (out / "q.md").read_text()
    assert "[default] some data-free score ranks transfer sets at least as well as the Hausdorff distance: **holds**" in markdown
    assert (out / "q.tex").read_text().startswith("\\begin{table}")
    assert record["provenance"]["inputs"]["students/natural/seed2/metrics.json"]["sha256"]
    for metric in QUALITY_METRICS:
        assert (out / "fig" / f"quality_{metric}.png").read_bytes()[:4] == b"\x89PNG"
