"""dfkd.io.progress.Every: the clock of the fill and synthesis loops' checkpoints and log lines."""
from dfkd.io.progress import Every


def test_every_is_due_once_per_period():
    due = Every(10.0)
    start = due._last
    assert not due(start + 9.9)
    assert due(start + 10.0)
    assert not due(start + 19.9)  # the period counts from the last time it was due
    assert due(start + 20.0)


def test_every_first_is_due_at_once_and_zero_is_always_due():
    first = Every(10.0, first=True)
    assert first(0.0) and not first(5.0)
    always = Every(0.0)
    assert always(always._last) and always(always._last)
