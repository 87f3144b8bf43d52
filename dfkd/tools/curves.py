"""Training curves: test accuracy and loss per epoch of one or more runs, from their `log.csv`.

Input: `log.csv` files as `dfkd.training.write_log_csv` writes them (`epoch`, `loss`,
`test_accuracy` in [0, 1], `lr`, `seconds`; teacher and students alike). Output: one PNG with
two panels side by side, test accuracy (percent) and training loss against the epoch, one line
per run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from dfkd.io.artifacts import atomic_path
from dfkd.errors import DfkdError

CURVE_COLUMNS = ("epoch", "loss", "test_accuracy")


def read_log(path: str | Path) -> pd.DataFrame:
    """A run's per-epoch log; DfkdError naming the file when it is missing or lacks columns."""
    path = Path(path)
    if not path.is_file():
        raise DfkdError(f"{path} not found; a run's log.csv is written beside its model.pt when training ends.")
    try:
        frame = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        raise DfkdError(f"{path} is not a readable CSV ({exc}).") from exc
    missing = [column for column in CURVE_COLUMNS if column not in frame.columns]
    if missing:
        raise DfkdError(f"{path} lacks column(s) {', '.join(missing)}; expected a dfkd log.csv "
                        f"({', '.join(CURVE_COLUMNS)}, ...).")
    if frame.empty:
        raise DfkdError(f"{path} holds no epochs.")
    return frame


def default_label(path: Path) -> str:
    """`students/{run}/log.csv` -> run; `teacher/log.csv` -> teacher."""
    return Path(path).parent.name or str(path)


def plot_curves(log_csvs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
                title: str = "") -> None:
    """Write `out` (PNG): test accuracy (%) and loss per epoch, one line per log file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [Path(p) for p in log_csvs]
    if not paths:
        raise DfkdError("plot-curves: give at least one log.csv.")
    if labels is not None and len(labels) != len(paths):
        raise DfkdError(f"plot-curves: {len(labels)} label(s) for {len(paths)} log.csv file(s); give one per file.")
    logs = [read_log(path) for path in paths]  # all read before anything is drawn
    names = list(labels) if labels is not None else [default_label(path) for path in paths]
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for name, log in zip(names, logs):
        acc_ax.plot(log["epoch"], 100.0 * log["test_accuracy"], marker="o", markersize=2.5, label=name)
        loss_ax.plot(log["epoch"], log["loss"], marker="o", markersize=2.5, label=name)
    acc_ax.set_ylabel("test accuracy (%)")
    loss_ax.set_ylabel("training loss")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    acc_ax.legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
