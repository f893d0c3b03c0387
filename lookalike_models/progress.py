"""Progress of long work (training loops): expected work at start, then counts, rate and ETA every few seconds.

A loop wraps itself in ``Progress`` and calls ``advance`` per unit of work (batch, step, campaign); lines go to
the ``lookalike_models.progress`` logger at most every ``every`` seconds (10 s, or ``LOOKALIKE_PROGRESS_SECONDS``).
Whoever runs the work can also watch it: inside ``report_progress_to(sink)`` every ``Progress``, however deeply
nested in the code, calls ``sink(label, done, total)`` at start, with each periodic line and at the end
(a Prefect task turns that into a progress artifact; this module knows nothing of Prefect).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

log = logging.getLogger(__name__)

ProgressSink = Callable[[str, int, "int | None"], None]
_SINK: ContextVar[ProgressSink | None] = ContextVar("lookalike_progress_sink", default=None)
DEFAULT_EVERY = 10.0
EVERY_ENV = "LOOKALIKE_PROGRESS_SECONDS"


@contextlib.contextmanager
def report_progress_to(sink: ProgressSink) -> Iterator[ProgressSink]:
    """Every ``Progress`` started in this context (this thread/task) also calls ``sink(label, done, total)``."""
    token = _SINK.set(sink)
    try:
        yield sink
    finally:
        _SINK.reset(token)


def default_every() -> float:
    value = os.environ.get(EVERY_ENV)
    return float(value) if value else DEFAULT_EVERY


class Progress:
    """Counts ``unit``s of work done out of ``total`` (an upper bound, or None when unknown) and reports them.

    >>> with Progress("ralm user model", total=epochs * batches, unit="batches") as progress:
    ...     for batch in batches:
    ...         progress.advance()
    """

    def __init__(self, label: str, total: int | None, unit: str, every: float | None = None, clock=time.monotonic):
        self.label, self.total, self.unit = label, total, unit
        self.every = default_every() if every is None else every
        self.clock = clock
        self.done = 0
        self.start = self.last_report = clock()

    def __enter__(self) -> Progress:
        self.start = self.last_report = self.clock()
        expected = "total unknown" if self.total is None else f"{self.total} {self.unit} expected"
        log.info("%s: starting, %s", self.label, expected)
        self._tell_sink()
        return self

    def __exit__(self, *exc) -> None:
        elapsed = self.clock() - self.start
        if exc[0] is not None:
            log.info("%s: stopped after %d %s in %s", self.label, self.done, self.unit, duration(elapsed))
            return
        self.total = self.done  # an upper bound, or early stopping without set_total: the work is complete
        log.info(
            "%s: done, %d %s in %s (%s %s/s)",
            self.label,
            self.done,
            self.unit,
            duration(elapsed),
            rate_text(self.done, elapsed),
            self.unit,
        )
        self._tell_sink()

    def advance(self, n: int = 1) -> None:
        """``n`` more units done; logs (and tells the sink) when ``every`` seconds passed since the last report."""
        self.done += n
        now = self.clock()
        if now - self.last_report < self.every:
            return
        self.last_report = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total is None:
            log.info("%s: %d %s (%s %s/s)", self.label, self.done, self.unit, rate_text(self.done, elapsed), self.unit)
        else:
            eta = duration((self.total - self.done) / rate) if rate > 0 else "unknown"
            log.info(
                "%s: %d/%d %s (%s %s/s, ETA %s)",
                self.label,
                self.done,
                self.total,
                self.unit,
                rate_text(self.done, elapsed),
                self.unit,
                eta,
            )
        self._tell_sink()

    def set_total(self, total: int) -> None:
        """The work turned out shorter (or longer) than announced, e.g. early stopping."""
        self.total = total

    def _tell_sink(self) -> None:
        sink = _SINK.get()
        if sink is not None:
            sink(self.label, self.done, self.total)


def rate_text(count: float, seconds: float) -> str:
    """Units per second with the digits that matter: 12345, 123, 12.3, 1.23, 0.012."""
    rate = count / seconds if seconds > 0 else 0.0
    if rate >= 100:
        return f"{rate:.0f}"
    if rate >= 10:
        return f"{rate:.1f}"
    if rate >= 1:
        return f"{rate:.2f}"
    return f"{rate:.2g}"


def duration(seconds: float) -> str:
    """Human-readable: 0.4s, 42s, 1m05s, 2h03m."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
