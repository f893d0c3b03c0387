"""Progress while training: expected work at start, counts with rate and ETA every few seconds, the end."""

from __future__ import annotations

import logging

import pytest

from lookalike_models.progress import Progress, duration, report_progress_to

LOGGER = "lookalike_models.progress"


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_progress_logs_start_periodic_lines_with_rate_and_eta_and_the_end(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock, calls = FakeClock(), []
    with report_progress_to(lambda *call: calls.append(call)):
        with Progress("user model", 100, "batches", every=10, clock=clock) as progress:
            clock.now += 4
            progress.advance(20)  # 4 s: too early for a line
            clock.now += 6
            progress.advance(20)  # 10 s, 40 done: 4 batches/s, 60 left -> ETA 15s
            clock.now += 5
            progress.advance(10)  # 5 s after the last line: quiet
            clock.now += 65
            progress.advance(10)  # 80 s, 60 done: 0.75/s, 40 left -> 53 s
    assert progress_lines(caplog) == [
        "user model: starting, 100 batches expected",
        "user model: 40/100 batches (4.00 batches/s, ETA 15s)",
        "user model: 60/100 batches (0.75 batches/s, ETA 53s)",
        "user model: done, 60 batches in 1m20s (0.75 batches/s)",
    ]
    # Start, each periodic line, and the end with done == total (fewer batches than the upper bound ran).
    assert calls == [("user model", 0, 100), ("user model", 40, 100), ("user model", 60, 100), ("user model", 60, 60)]


def test_unknown_total_and_a_shortened_total():
    clock, calls = FakeClock(), []
    with report_progress_to(lambda *call: calls.append(call)):
        with Progress("scan", None, "users", every=1, clock=clock) as progress:
            clock.now += 2
            progress.advance(50)
        with Progress("epochs", 10, "batches", every=1, clock=clock) as progress:
            progress.set_total(4)  # early stopping
            clock.now += 2
            progress.advance(2)
    assert calls == [("scan", 0, None), ("scan", 50, None), ("scan", 50, 50)] + [
        ("epochs", 0, 10),
        ("epochs", 2, 4),
        ("epochs", 2, 2),
    ]


def test_nested_progress_reports_both_labels_and_a_failure_stops_quietly(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock, calls = FakeClock(), []
    with report_progress_to(lambda *call: calls.append(call)):
        with pytest.raises(RuntimeError):
            with Progress("ensemble", 2, "parts", every=1, clock=clock) as outer:
                with Progress("encoder", 3, "epochs", every=1, clock=clock) as inner:
                    for _ in range(3):
                        clock.now += 1
                        inner.advance()
                clock.now += 1
                outer.advance()
                raise RuntimeError("boom")
    labels = [label for label, _, _ in calls]
    assert labels == ["ensemble", "encoder", "encoder", "encoder", "encoder", "encoder", "ensemble"]
    assert calls[-2] == ("encoder", 3, 3) and calls[-1] == ("ensemble", 1, 2)
    assert progress_lines(caplog)[-1] == "ensemble: stopped after 1 parts in 4.0s"


def test_no_sink_outside_report_progress_to_and_the_interval_from_the_environment(monkeypatch):
    calls = []
    with report_progress_to(lambda *call: calls.append(call)):
        pass
    with Progress("alone", 1, "steps") as progress:
        progress.advance()
    assert calls == []
    monkeypatch.setenv("LOOKALIKE_PROGRESS_SECONDS", "0.25")
    assert Progress("x", 1, "steps").every == 0.25
    monkeypatch.delenv("LOOKALIKE_PROGRESS_SECONDS")
    assert Progress("x", 1, "steps").every == 10.0


def test_durations_read_like_a_person_writes_them():
    assert [duration(s) for s in (0.4, 42.3, 65, 3599.6, 7380)] == ["0.4s", "42s", "1m05s", "1h00m", "2h03m"]
