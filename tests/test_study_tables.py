"""The study's tables built from hand-written result files: rows, columns, numbers over seeds, claims."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfkd.errors import DfkdError
from dfkd.analysis.stats import EQUIVALENT, HOLDS
from dfkd.analysis.study.published import published, study_dataset
from dfkd.analysis.study.tables import build_table, effective_classes, render_markdown, write_table

K = 10


def recipe(sources, balanced=True, classes=None, size=None):
    return {"sources": sources, "balanced": balanced, "num_classes": K, "per_class": 6000, "total": 60000,
            "classes": classes, "size": size, "seed": 0}


SEEDS = (0, 1, 2)


def per_seed(value):
    """A number per seed: a list as given, a scalar plus 0.01 * seed (so that paired differences
    between two scalars are the same for every seed)."""
    return list(value) if isinstance(value, (list, tuple)) else [value + 0.01 * s for s in range(len(SEEDS))]


class FakeResults:
    """A target folder with the files a table reads for every seed, written by hand with chosen numbers."""

    def __init__(self, root: Path):
        self.root = root

    def set(self, name, before, after, distance, accuracies=None, target=None):
        counts = pd.DataFrame({"class": np.arange(K), "before": before, "target": target if target is not None else after, "after": after})
        counts["short"] = counts["after"] < counts["target"]
        (self.root / "transfer" / name).mkdir(parents=True, exist_ok=True)
        for seed, d in zip(SEEDS, per_seed(distance)):
            counts.to_csv(self.root / "transfer" / name / f"seed{seed}.counts.csv", index=False)
            self._json(f"distance/{name}/seed{seed}.json", {"hausdorff": d, "directed_ab": d / 2, "directed_ba": d})
        for variant, accuracy in (accuracies or {}).items():
            run = name if variant == "default" else f"{name}.{variant}"
            for seed, a in zip(SEEDS, per_seed(accuracy)):
                self._json(f"students/{run}/seed{seed}/metrics.json", {"test_accuracy": a})

    def teacher(self, accuracy):
        self._json("teacher/metrics.json", {"test_accuracy": accuracy})

    def _json(self, relative, payload):
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload))


def even(n):
    return np.full(K, n)


def params(table, rows, variants=("default",), dataset="FMNIST", seeds=SEEDS):
    return {"target": "fm", "table": table, "dataset": dataset, "num_classes": K, "per_class": 6000, "total": 60000,
            "variants": list(variants), "seeds": list(seeds), "min_effect": 1.0, "rows": [{"row": r, "set": s, "recipe": rec} for r, s, rec in rows]}


@pytest.fixture()
def results(tmp_path):
    return FakeResults(tmp_path / "fm")


def test_table1_reads_every_number_from_the_files_and_puts_the_study_beside_it(results):
    accuracies = {2: 0.2, 4: 0.35, 6: 0.5, 8: 0.6, 10: 0.7}
    rows = []
    for k, acc in accuracies.items():
        after = np.where(np.arange(K) < k, 10000 // k, 0)
        results.set(f"t1_k{k}", even(6000), after, distance=50.0 - 4 * k, accuracies={"default": acc})
        rows.append((str(k), f"t1_k{k}", recipe(["train"], classes=k, size=10000)))
    table, inputs = build_table(results.root, params("table1", rows))
    frame = table.frame
    assert list(frame["row"]) == ["2", "4", "6", "8", "10"] and list(frame["classes"]) == [2, 4, 6, 8, 10]
    assert frame["accuracy_mean"].tolist() == pytest.approx([100 * a + 1 for a in accuracies.values()])
    assert frame["accuracy_sd"].tolist() == pytest.approx([1.0] * 5)  # 100 * (a, a + .01, a + .02)
    assert frame["accuracy_n"].tolist() == [3] * 5
    assert frame["accuracy_seed2"].tolist() == pytest.approx([100 * a + 2 for a in accuracies.values()])
    assert frame["hausdorff_mean"].tolist() == pytest.approx([42.01, 34.01, 26.01, 18.01, 10.01])
    assert frame["size"].tolist() == [10000, 10000, 9996, 10000, 10000]
    study = published()["table1"]["rows"]
    assert frame["study (CIFAR-10) accuracy"].tolist() == [study[str(k)]["accuracy"] for k in accuracies]
    assert frame["study (CIFAR-10) distance"].tolist() == [study[str(k)]["distance"] for k in accuracies]
    # 4 adjacent pairs for accuracy, 4 for distance; identical differences in every seed
    assert len(table.claims) == 8 and all(c.verdict == "holds" and c.n == 3 for c in table.claims)
    assert table.claims[0].difference_mean == pytest.approx(15.0) and table.claims[4].difference_mean == pytest.approx(8.0)
    assert set(inputs) == ({f"transfer/t1_k{k}/seed0.counts.csv" for k in accuracies}  # sizes: the first seed's
                           | {f"distance/t1_k{k}/seed{s}.json" for k in accuracies for s in SEEDS}
                           | {f"students/t1_k{k}/seed{s}/metrics.json" for k in accuracies for s in SEEDS})


def test_a_broken_trend_is_reported_as_not_holding(results):
    rows = []
    for k, acc in ((2, 0.3), (4, 0.2), (6, 0.5)):
        results.set(f"k{k}", even(6000), even(1000), distance=10.0 + k, accuracies={"default": acc})
        rows.append((str(k), f"k{k}", recipe(["train"], classes=k, size=10000)))
    table, _ = build_table(results.root, params("table2", rows))
    verdicts = [c.verdict for c in table.claims]
    assert verdicts == ["does not hold", "holds", "does not hold", "does not hold"]
    assert "accuracy rises with the number of classes (k = 2 < k = 4): **does not hold** (mean paired difference -10.00 points" in table.verdicts[0]


def test_noisy_seeds_are_inconclusive_and_one_seed_decides_nothing(results):
    rows = []
    for k, accs in ((2, [0.30, 0.50, 0.40]), (4, [0.45, 0.35, 0.42])):
        results.set(f"k{k}", even(6000), even(1000), distance=10.0, accuracies={"default": accs})
        rows.append((str(k), f"k{k}", recipe(["train"], classes=k, size=10000)))
    table, _ = build_table(results.root, params("table2", rows))
    assert table.claims[0].verdict == "inconclusive" and table.claims[0].ci_low < 0 < table.claims[0].ci_high
    single, _ = build_table(results.root, params("table2", rows, seeds=(0,)))
    assert single.claims[0].verdict == "single seed" and single.claims[0].n == 1
    assert all("**holds**" not in line for line in single.verdicts)


def test_main_table_has_one_accuracy_column_per_variant_and_family_verdicts(results):
    results.teacher(0.905)
    numbers = {"noise": (0.17, 0.15), "noise_bal": (0.51, 0.40), "natural": (0.69, 0.70), "natural_bal": (0.73, 0.66)}
    rows = []
    for name, (aug, noaug) in numbers.items():
        results.set(name, even(6000), even(5000), distance=20.0, accuracies={"default": aug, "noaug": noaug})
        rows.append((name, name, recipe([name], balanced=name.endswith("_bal"))))
    table, inputs = build_table(results.root, params("main", rows, variants=("default", "noaug")))
    assert {"accuracy_default_mean", "accuracy_default_sd", "accuracy_default_n", "accuracy_noaug_mean"} <= set(table.frame.columns)
    assert table.frame.set_index("row").loc["natural_bal", "accuracy_noaug_mean"] == pytest.approx(67.0)
    text = "\n".join(table.verdicts)
    assert "balanced beats unbalanced for natural [default]: **holds** (mean paired difference +4.00 points, 95% CI [+4.00, +4.00], n = 3 paired seeds)" in text
    assert "balanced beats unbalanced for natural [noaug]: **does not hold**" in text
    assert "noise_bal < natural_bal in accuracy (balanced) [default]: **holds**" in text
    assert "teacher/metrics.json" in inputs and "Teacher test accuracy 90.50%" in table.method


def one_row_per_set(results, accuracies_by_set: dict) -> list:
    """Rows of the sets named, each with a default student's accuracy per seed."""
    rows = []
    for name, accuracies in accuracies_by_set.items():
        results.set(name, even(6000), even(6000), distance=20.0, accuracies={"default": accuracies})
        rows.append((name, name, recipe([name])))
    return rows


def test_the_synthesis_table_is_a_family_of_its_own_with_the_protocol_beside_zskd(results):
    results.teacher(0.9028)
    rows = one_row_per_set(results, {"natural_bal": [0.760, 0.770, 0.765], "impressions": [0.762, 0.768, 0.766],
                                     "natural_bal_di": [0.790, 0.800, 0.795],
                                     "noise_bal": [0.69, 0.70, 0.71]})  # noise_bal_di not run
    table, _ = build_table(results.root, params("synthesis", rows))
    assert [c.claim for c in table.claims] == ["arbitrary data beats synthesised data: natural_bal > impressions",
                                              "topping up with impressions helps: natural_bal_di > natural_bal"]
    assert table.claims[1].verdict == HOLDS and table.claims[1].difference_mean == pytest.approx(3.0)
    assert table.claims[0].verdict == EQUIVALENT  # -0.03 points, 90% interval well inside +-1 (min_effect)
    assert "79.62%" in table.notes[0] and "final epoch" in table.notes[0]
    main, _ = build_table(results.root, params("main", rows))
    assert not any("impressions" in c.claim for c in main.claims)  # the synthesis claims live in their table only


def test_the_synthesis_table_of_a_batchnorm_teacher_decides_inversion_and_names_its_top_ups(results):
    results.teacher(0.9088)
    rows = one_row_per_set(results, {"natural_bal": [0.64, 0.60, 0.68], "inversion": [0.70, 0.66, 0.74],
                                     "natural_bal_inv": [0.75, 0.71, 0.80]})
    table, _ = build_table(results.root, params("synthesis", rows))
    assert [c.claim for c in table.claims] == ["arbitrary data beats synthesised data: natural_bal > inversion",
                                              "topping up with inversion helps: natural_bal_inv > natural_bal"]
    assert table.claims[0].verdict == "does not hold" and table.claims[0].difference_mean == pytest.approx(-6.0)
    assert table.title.startswith("DeepInversion beside arbitrary transfer sets")
    assert "*_inv are the arbitrary set topped up by a class-conditional fill of DeepInversion" in table.method
    assert "*_di" not in table.method and "Teacher test accuracy 90.88%" in table.method


def test_table4_groups_bases_and_names_the_best_balancer(results):
    grid = {"noise/none": 0.14, "noise/noise": 0.31, "noise/natural": 0.67, "digits/none": 0.5, "digits/natural": 0.45}
    rows = []
    for row, acc in grid.items():
        name = row.replace("/", "_")
        results.set(name, even(6000), even(6000), distance=10.0, accuracies={"noaug": acc})
        rows.append((row, name, recipe(["a", "b"])))
    table, _ = build_table(results.root, params("table4", rows, variants=("noaug",)))
    assert list(table.frame["base"]) == ["noise", "noise", "noise", "digits", "digits"]
    assert list(table.frame["balancer"]) == ["none", "noise", "natural", "none", "natural"]
    assert table.frame["study (CIFAR-10) accuracy"].tolist() == [14.38, 31.03, 67.29, 40.46, 64.90]
    text = "\n".join(table.verdicts)
    assert "balancing the noise base with noise beats the unbalanced base: **holds**" in text
    assert "balancing the noise base with natural beats the unbalanced base: **holds**" in text
    assert "balancing the digits base with natural beats the unbalanced base: **does not hold**" in text
    assert "natural data balances the noise base better than noise: **holds**" in text
    markdown = render_markdown(table, params("table4", rows))
    assert "| base | none | noise | natural |" in markdown and "68.00 ± 1.00 (67.29)" in markdown


def test_table3_and_table5_verdicts(results):
    for name, acc, dist in (("a", 0.40, 30.0), ("ab", 0.60, 25.0), ("b", 0.55, 24.0), ("ba", 0.70, 20.0)):
        results.set(name, even(6000), even(6000), distance=dist, accuracies={"noaug": acc, "default": acc})
    rows3 = [("A", "a", recipe(["a"], False)), ("A+B", "ab", recipe(["a", "b"])), ("B", "b", recipe(["b"], False)), ("B+A", "ba", recipe(["b", "a"]))]
    table3, _ = build_table(results.root, params("table3", rows3, variants=("noaug",)))
    assert all(c.verdict == "holds" for c in table3.claims) and table3.frame["study (CIFAR-10) accuracy"].tolist() == [40.46, 64.90, 66.94, 70.58]
    rows5 = [("noise", "a", recipe(["a"])), ("synthetic", "b", recipe(["b"])), ("natural", "ba", recipe(["b", "a"]))]
    table5, _ = build_table(results.root, params("table5", rows5))
    # b is closer than a but a... accuracy follows distance: a 40% at 30, b 55% at 24, ba 70% at 20
    assert [c.verdict for c in table5.claims] == ["holds"] * 4
    assert table5.claims[0].claim.startswith("the closer set is the better one: natural (distance 20.01) beats synthetic (24.01)")


def test_class_frequencies_and_table9_with_the_study_counts(results):
    before = np.array([2751, 3501, 917, 404, 263, 99, 22614, 0, 29451, 0])
    after = np.array([6000, 6000, 6000, 6000, 6000, 6000, 6000, 100, 6000, 200])
    results.set("noise_bal", before, after, distance=19.0, target=even(6000))
    results.set("noise", before, before, distance=23.0)
    table, _ = build_table(results.root, params("class_frequencies", [("noise", "noise_bal", recipe(["noise", "pool"]))]))
    frame = table.frame
    assert len(frame) == K and frame["balanced"].tolist() == after.tolist() and frame["unbalanced"].tolist() == before.tolist()
    assert frame["study (FMNIST) unbalanced"].tolist() == before.tolist()  # the study's own FMNIST noise counts
    assert "short after balancing: [7, 9]" in table.verdicts[0] and "**holds**" in table.verdicts[0]
    rows9 = [("noise", "noise", recipe(["noise"], False)), ("noise_bal", "noise_bal", recipe(["noise", "pool"]))]
    table9, _ = build_table(results.root, params("table9", rows9))
    assert table9.frame["size"].tolist() == [60000, int(after.sum())]
    assert table9.frame["study (FMNIST) size"].tolist() == [60000, 60000]
    assert "**holds**" in table9.verdicts[0] and "**holds**" in table9.verdicts[1]
    # a target the study did not use gets no study column
    plain, _ = build_table(results.root, params("table9", rows9, dataset=None))
    assert not any(c.startswith("study") for c in plain.frame.columns)


def test_effective_classes():
    assert effective_classes(np.full(10, 7)) == pytest.approx(10.0)
    assert effective_classes(np.array([5, 0, 0])) == pytest.approx(1.0)


def test_written_tables_carry_provenance_and_agree(results, tmp_path):
    results.set("s", even(6000), even(600), distance=12.5, accuracies={"default": [0.8, 0.7, 0.9]})
    results.set("n", even(6000), even(600), distance=13.0, accuracies={"default": [0.5, 0.6, 0.4]})
    p = params("table5", [("natural", "s", recipe(["x"])), ("noise", "n", recipe(["y"]))])
    out = tmp_path / "out"
    write_table(results.root, p, out / "t.csv", out / "t.md", out / "t.json", out / "t.tex")
    csv = pd.read_csv(out / "t.csv")
    record = json.loads((out / "t.json").read_text())
    assert csv["accuracy_mean"].tolist() == pytest.approx([80.0, 50.0]) and record["rows"][0]["accuracy_mean"] == pytest.approx(80.0)
    assert csv["accuracy_sd"].tolist() == pytest.approx([10.0, 10.0]) and csv["accuracy_seed1"].tolist() == pytest.approx([70.0, 60.0])
    assert record["seeds"] == [0, 1, 2]
    claim = record["claims"][0]
    assert {"claim", "difference_mean", "ci_low", "ci_high", "n", "verdict", "holm_verdict", "seeds_needed"} <= set(claim)
    assert claim["n"] == 3 and claim["difference_mean"] == pytest.approx(30.0)
    assert claim["seeds"] == [0, 1, 2] and claim["differences"] == pytest.approx([30.0, 10.0, 50.0])
    assert claim["min_effect"] == 1.0 and claim["family_size"] == 2
    inputs = record["provenance"]["inputs"]
    assert inputs["students/s/seed2/metrics.json"]["sha256"] and "distance/n/seed0.json" in inputs
    markdown = (out / "t.md").read_text()
    assert "Does the study's claim hold" in markdown and "80.00 ± 10.00" in markdown and "n=3" in markdown
    assert "| claim | n | difference | 95% CI | verdict | Holm (2 claims) | seeds needed (this effect) |" in markdown
    tex = (out / "t.tex").read_text()
    assert r"\toprule" in tex and r"80.00 $\pm$ 10.00" in tex and "Holm (2 claims)" in tex


def test_missing_results_and_bad_params_are_named(results):
    results.set("s", even(6000), even(600), distance=1.0)  # no student metrics
    with pytest.raises(DfkdError, match="students/s/seed0/metrics.json"):
        build_table(results.root, params("table5", [("natural", "s", recipe(["x"]))]))
    with pytest.raises(DfkdError, match="unknown study table 'table7'"):
        build_table(results.root, params("table7", [("natural", "s", recipe(["x"]))]))
    with pytest.raises(DfkdError, match="no rows"):
        build_table(results.root, params("table5", []))


def test_study_dataset_names():
    assert study_dataset({"kind": "torchvision", "name": "FashionMNIST"}) == "FMNIST"
    assert study_dataset({"kind": "torchvision", "name": "CIFAR100"}) == "CIFAR-100"
    assert study_dataset({"kind": "imagefolder", "root": "x"}) is None


def test_published_numbers_are_consistent():
    """Table 9's balanced sizes are the sums of Tables 6 to 8's balanced counts (a transcription check)."""
    numbers = published()
    for dataset, families in numbers["class_frequencies"].items():
        for family, counts in families.items():
            assert sum(counts["unbalanced"]) == numbers["table9"][dataset][family]
            assert sum(counts["balanced"]) == numbers["table9"][dataset][f"{family}_bal"]


def test_a_table_whose_rows_test_no_claim_says_so(results):
    results.teacher(0.9)
    results.set("noise", even(6000), even(6000), distance=1.0, accuracies={"default": 0.2})
    table, _ = build_table(results.root, params("main", [("noise", "noise", recipe(["noise"], False))]))
    assert table.claims == [] and table.verdicts == ["the study's claims for this table: **not measured** (its rows lack the pairs the claims compare; see the row names in config.yaml)"]
