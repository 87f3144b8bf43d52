"""Collapse is reported, not hidden (issue 27): the threshold, the line, and where it appears
(`dfkd score` and the summary)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dfkd.io.artifacts import write_json
from dfkd.cli import main
from dfkd.stages.collapse import SHARE, collapse, collapse_line, effective_from_counts
from dfkd.stages.score import score_sources
from dfkd.stages.set_scores import effective_classes
from dfkd.analysis.report import build_summary
from test_quality import one_hot_logits, write_source

# dfkd's FMNIST LeNet-5 teacher's labels of the default base sources (docs/results/fmnist/class_frequencies.md)
NOISE = [7, 53, 291, 9, 224, 60, 27236, 0, 32118, 2]
SHAPES = [4584, 548, 7741, 354, 458, 6550, 3644, 526, 32444, 3151]
PATCHES = [1916, 588, 4908, 246, 321, 3528, 9331, 201, 37795, 1166]
BAG = [500, 30, 500, 20, 10, 40, 400, 300, 10200, 0]  # 85% in class 8, like issue 27's BatchNorm teacher


def test_the_threshold_is_more_than_three_quarters_in_one_class():
    assert SHARE == 0.75
    assert collapse([75, 25]) is None  # exactly 3/4: not more
    assert collapse([76, 24])["class"] == 0
    assert collapse([1, 2, 301, 96])["share"] == pytest.approx(0.7525)
    assert collapse([0, 0, 0]) is None and collapse([5]) is None


@pytest.mark.parametrize("counts", [NOISE, SHAPES, PATCHES])
def test_the_default_teachers_base_sources_do_not_collapse(counts):
    assert collapse(counts) is None


def test_a_source_mostly_in_one_class_gets_one_line_naming_the_remedy():
    line = collapse_line("source `patches`", BAG, soft_effective=1.72)
    assert "\n" not in line
    assert "85.0% of source `patches` (12,000 rows) as class 8" in line
    assert f"effective classes {effective_from_counts(BAG):.1f}, soft 1.7 of 10" in line
    for remedy in ("fill source", "impressions", "inversion"):
        assert remedy in line
    assert collapse_line("source `patches`", PATCHES) is None


def test_effective_classes_from_counts_is_the_quality_score():
    labels = np.repeat(np.arange(10), BAG)
    assert effective_from_counts(BAG) == pytest.approx(effective_classes(labels, 10), rel=1e-12)


def test_dfkd_score_says_which_candidate_collapsed(tmp_path, capsys):
    bag = write_source(tmp_path, "bag", one_hot_logits([2] * 9 + [0, 1], 3))  # 82% class 2
    even = write_source(tmp_path, "even", one_hot_logits([0, 1, 2] * 3, 3))
    payload = score_sources([bag[0], even[0]], 3, [bag[1], even[1]], per_class=3)
    by_name = {c["name"]: c for c in payload["candidates"]}
    assert by_name["even"]["collapse"] is None and by_name["mix:bag+even"]["collapse"] is None
    assert "81.8% of source `bag` (11 rows) as class 2" in by_name["bag"]["collapse"]
    assert "soft 1." in by_name["bag"]["collapse"]  # the logits were read: the soft effective classes too
    assert main(["score", "--labels", str(bag[0]), str(even[0]), "--num-classes", "3",
                 "--out", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if line.startswith("Collapse:")] == [
        line for line in printed if "source `bag`" in line]
    assert len([line for line in printed if line.startswith("Collapse:")]) == 1


def _summary(tmp_path, before: dict[str, list[int]]):
    target = tmp_path / "t"
    write_json(target / "teacher" / "metrics.json", {"test_accuracy": 0.9, "epochs": 2}, None)
    sets = {}
    for name, counts in before.items():
        (target / "transfer" / name).mkdir(parents=True)
        frame = pd.DataFrame({"class": range(len(counts)), "before": counts, "after": counts})
        frame.to_csv(target / "transfer" / name / "seed0.counts.csv", index=False)
        write_json(target / "distance" / name / "seed0.json", {"hausdorff": 1.0, "directed_ab": 1.0,
                                                               "directed_ba": 1.0}, None)
        sets[name] = {"sources": [name.split("_")[0], "pool"], "balanced": True}
    build_summary(target, {"target": "t", "distilled": [], "sets": sets}, tmp_path / "s.csv", tmp_path / "s.md")
    return (tmp_path / "s.md").read_text()


def test_the_summary_says_which_base_source_collapsed(tmp_path):
    text = _summary(tmp_path, {"patches": BAG, "patches_bal": BAG, "shapes": SHAPES})
    lines = [line for line in text.splitlines() if "Collapse:" in line]
    assert len(lines) == 1  # one line per base source, not per set
    assert "85.0% of source `patches` (the base of patches, patches_bal)" in lines[0]
    assert "impressions" in lines[0] and "shapes" not in lines[0]


def test_the_summary_has_no_collapse_section_without_a_collapse(tmp_path):
    text = _summary(tmp_path, {"noise": NOISE, "shapes": SHAPES, "patches": PATCHES})
    assert "Collapse" not in text and "mostly one class" not in text
