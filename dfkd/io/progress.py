"""Progress of long stages: a tqdm bar on a terminal, plain periodic lines in a log file.

Snakemake sends each job's stderr to its log file (`> {log} 2>&1`). tqdm redraws its bar with
carriage returns, which leaves one unreadable line in a file; so where the stream is not a
terminal, `Progress` prints one complete line each time another `step_percent` of the work is
done (at most one per `min_seconds`, the last one always), with the rate and the time left:

    features noise: 40% (4,096/10,240 images), 12.3s, ~18s left, 333 images/s
"""
from __future__ import annotations

import sys
import time
from typing import IO, Iterable, Iterator, TypeVar

Item = TypeVar("Item")

STEP_PERCENT = 10  # a log line per 10% of the work
MIN_SECONDS = 2.0  # ... but at most one line per 2 s (a short job logs only its final line)
TTY_MININTERVAL = 1.0  # seconds between tqdm redraws on a terminal
LINE_SECONDS = 10.0  # seconds between the progress lines of loops without a known total (fill, synthesis)


def _is_tty(stream: IO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or wrapped streams (pytest capture)
        return False


class Progress:
    """Counts work done (`update(n)`) towards `total` and reports it on `stream` (stderr).

    Use as a context manager, or call `close()`: the final line states the count and time.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "items", *, stream: IO | None = None,
                 step_percent: float = STEP_PERCENT, min_seconds: float = MIN_SECONDS, tty: bool | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.step, self.min_seconds = float(step_percent), float(min_seconds)
        self.done = 0
        self.started = self._last_line = time.perf_counter()
        self._next_percent = self.step
        self._closed = False
        self._bar = None
        if _is_tty(self.stream) if tty is None else tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=f" {unit}", unit_scale=False, file=self.stream,
                             mininterval=TTY_MININTERVAL, dynamic_ncols=True, leave=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if not self.total:
            return
        percent = 100.0 * self.done / self.total
        now = time.perf_counter()
        if percent >= self._next_percent and self.done < self.total:
            self._next_percent = (percent // self.step + 1) * self.step
            if now - self._last_line >= self.min_seconds:
                self._line(now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            return
        self._line(time.perf_counter(), final=True)

    def _line(self, now: float, final: bool = False) -> None:
        self._last_line = now
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if final:
            text = f"{self.desc}: {self.done:,} {self.unit} in {elapsed:.1f}s"
        else:
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            text = (f"{self.desc}: {100.0 * self.done / self.total:.0f}% ({self.done:,}/{self.total:,} {self.unit}), "
                    f"{elapsed:.1f}s, ~{left:.0f}s left")
        print(f"{text}, {rate:,.0f} {self.unit}/s" if self.done else text, file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._bar is not None:  # an error: no "done" line, but leave the terminal clean
            self._bar.close()


def progress(items: Iterable[Item], desc: str, unit: str = "items", total: int | None = None,
             **options) -> Iterator[Item]:
    """Iterate `items`, counting one unit per item (`Progress` options apply)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, **options) as bar:
        for item in items:
            yield item
            bar.update(1)


def note(message: str, stream: IO | None = None) -> None:
    """One line of stage news (what is being read, a summary) on stderr, flushed for the log."""
    print(message, file=stream if stream is not None else sys.stderr, flush=True)


class Every:
    """Due once per `seconds` of wall time: when a long loop saves its checkpoint, when it
    prints a line. `first=True` makes the first call due (a log line at the start)."""

    def __init__(self, seconds: float, *, first: bool = False):
        self.seconds = float(seconds)
        self._last = float("-inf") if first else time.perf_counter()

    def __call__(self, now: float) -> bool:
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
