"""Collapse: the teacher puts most of a source in one class. Detected, and said in one line.

A teacher that dfkd did not train may see arbitrary data as one class: a small BatchNorm
CNN on Fashion-MNIST labels 85% of photo patches and 93% of shape renders "bag" (issue 27),
and students distilled on them reach 18 to 19%. Balancing leaves the other classes short, and
a table of accuracies does not say why; the summary (`dfkd.analysis.report`) and `dfkd score`
(`dfkd.stages.score`) say it in one line with the remedy, from this module.

A source (or set) has collapsed when its largest class holds more than three quarters of its
rows (`SHARE`). The line also gives the effective number of classes, exp of the entropy of
the teacher's label histogram (`dfkd.stages.set_scores.effective_classes`), and, where the teacher's
logits were read, of its mean softmax (`dfkd.stages.set_scores.soft_effective_classes`).

Why 3/4 and not 1/2: dfkd's own Fashion-MNIST LeNet-5 teacher already puts 53.5% of the noise,
54% of the shapes and 63% of the photo patches in one class (docs/results/fmnist/
class_frequencies.md), and balancing those sources gives students of 76% (natural_bal); a
half-share rule would flag every base source of the default experiment. The BatchNorm teacher
of issue 27 puts 85% and 93% in one class, and its students reach 18 to 19%. 3/4 lies between
the two with room on both sides. A share rule also reads the same for any K (with K = 2 it
asks for 3:1), where a rule on effective classes would not: a share above 3/4 already means
at most 3.05 effective classes of 10.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

SHARE = 0.75  # a source has collapsed when its largest class holds more than this share of its rows
REMEDY = ("top it up with a fill source, or synthesise from the teacher "
          "(generator impressions, or inversion for a teacher with BatchNorm)")


def effective_from_counts(counts: Sequence[int]) -> float:
    """exp(H(p)) of a class histogram: `dfkd.stages.set_scores.effective_classes` from counts instead of labels."""
    counts = np.asarray(counts, dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    return math.exp(float(-(p * np.log(p)).sum()))


def collapse(counts: Sequence[int], soft_effective: float | None = None) -> dict[str, Any] | None:
    """The facts of a collapse of this class histogram (K = len(counts)), or None if it has not collapsed.

    `soft_effective`: the set's `soft_effective_classes`, when its logits were read.
    """
    counts = np.asarray(counts, dtype=np.int64)
    K, n = len(counts), int(counts.sum())
    if K < 2 or n == 0:
        return None
    top = int(np.argmax(counts))
    share = counts[top] / n
    if not share > SHARE:
        return None
    return {"class": top, "share": float(share), "rows": n, "num_classes": K,
            "effective_classes": effective_from_counts(counts),
            "soft_effective_classes": None if soft_effective is None else float(soft_effective)}


def collapse_line(what: str, counts: Sequence[int], soft_effective: float | None = None) -> str | None:
    """One line saying that `what` (e.g. "source `patches`") collapsed, and the remedy; None if it did not."""
    facts = collapse(counts, soft_effective)
    if facts is None:
        return None
    soft = f", soft {facts['soft_effective_classes']:.1f}" if facts["soft_effective_classes"] is not None else ""
    return (f"Collapse: the teacher labels {100 * facts['share']:.1f}% of {what} ({facts['rows']:,} rows) as class "
            f"{facts['class']}; effective classes {facts['effective_classes']:.1f}{soft} of {facts['num_classes']} "
            f"(collapse: the largest class holds over {SHARE:.0%} of the rows). Students learn little else from "
            f"it: {REMEDY}.")
