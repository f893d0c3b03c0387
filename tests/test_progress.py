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


def test_progress_lines_appear_during_a_real_training(synthetic_data, monkeypatch, caplog):
    """The issue's check, scaled down: lines every LOOKALIKE_PROGRESS_SECONDS (10 s in production) while a
    model trains for several such intervals, each with the work done, a rate and an ETA, before the end."""
    from lookalike_models.catalog import build_scorer

    monkeypatch.setenv("LOOKALIKE_PROGRESS_SECONDS", "0.1")
    caplog.set_level(logging.INFO, logger=LOGGER)
    calls = []
    scorer = build_scorer("metaheac", {"dim": 8, "hidden": 16, "gate_hidden": 16, "meta_steps": 20, "batch_size": 128})
    campaigns = dict(list(synthetic_data.campaigns.items())[:3])  # meta-training is the part under test
    with report_progress_to(lambda *call: calls.append(call)):
        scorer.fit(synthetic_data, campaigns)
    lines = progress_lines(caplog)
    assert lines[0] == "metaheac meta-training: starting, 20 steps expected"
    assert lines[-1].startswith("metaheac meta-training: done, 20 steps in ")
    periodic = [line for line in lines[1:-1] if "ETA" in line]
    assert len(periodic) >= 2, lines
    assert all("/20 steps (" in line and "steps/s, ETA " in line for line in periodic)
    assert calls[0] == ("metaheac meta-training", 0, 20) and calls[-1] == ("metaheac meta-training", 20, 20)
    assert len(calls) == len(periodic) + 2


def test_a_training_task_keeps_one_progress_artifact_and_logs_progress_to_its_run(monkeypatch):
    from tasks import modeling

    created, updated = [], []
    monkeypatch.setattr(
        modeling, "update_progress_artifact", lambda i, p, description: updated.append((i, p, description))
    )
    monkeypatch.setattr(
        modeling, "create_progress_artifact", lambda p, description: created.append((p, description)) or "a1"
    )
    clock = FakeClock()
    sink = modeling.TrainingProgress("ralm_v1", min_seconds=2.0, clock=clock)
    sink("ralm user model", 0, 100)
    clock.now += 1
    sink("ralm user model", 30, 100)  # within 2 s of the last update: skipped
    clock.now += 1.5
    sink("ralm user model", 50, 100)
    sink("ralm user model", 80, 80)  # a piece of work ended (early stop): always shown
    sink("ralm look-alike", 0, None)  # a total unknown keeps the last percentage
    sink.finish()
    assert created == [(0.0, "training ralm_v1: ralm user model 0/100")]
    assert updated == [
        ("a1", 50.0, "training ralm_v1: ralm user model 50/100"),
        ("a1", 100.0, "training ralm_v1: ralm user model 80/80"),
        ("a1", 100.0, "training ralm_v1: done"),
    ]

    class RunLogger:
        def __init__(self):
            self.lines = []

        def log(self, level, fmt, *args):
            self.lines.append((level, fmt % args))

    run_logger = RunLogger()
    with modeling.progress_lines_in(run_logger), report_progress_to(sink):
        with Progress("ralm look-alike", 3, "batches", every=0) as progress:
            progress.advance()
    assert [line for _, line in run_logger.lines][0] == "ralm look-alike: starting, 3 batches expected"
    assert "ralm look-alike: done, 1 batches in" in run_logger.lines[-1][1]
    assert len(run_logger.lines) == 3 and {level for level, _ in run_logger.lines} == {logging.INFO}
    library = logging.getLogger(LOGGER)
    assert library.propagate and modeling._TO_RUN_LOGGER not in library.handlers  # restored after the task
