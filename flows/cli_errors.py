"""How `lookalike` reports what went wrong: exit statuses, one-line messages for user mistakes (a config key
at any depth named by its whole path), quiet consoles for them, and SIGTERM turned into Ctrl-C."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class UsageError(Exception):
    """A mistake in the command line, the config or the input: reported in one line, exit status 2."""


def is_user_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    from lookalike_models.contract import DataContractError
    from lookalike_models.locking import RunLockedError

    return isinstance(exc, UsageError | DataContractError | ValidationError | RunLockedError)


def key_path(loc: tuple) -> str:
    """A pydantic error location as a config key path: ``models[0].params.extra_members[0].params.alpah``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def describe(exc: BaseException) -> str:
    """One line for an error: pydantic's list of errors becomes 'key: problem (got value)'."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors()[:3]:
            key = key_path(error["loc"]) or "(config)"
            if error["type"] == "extra_forbidden":
                parts.append(f"unknown setting '{key}'")
            elif error["type"] == "value_error":  # a check's own message; a whole-config check names its keys
                message = error["msg"].removeprefix("Value error, ")
                parts.append(f"{key}: {message}" if error["loc"] else message)
            else:
                parts.append(f"{key}: {error['msg']} (got {error.get('input')!r:.80})")
        more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        return "; ".join(parts) + more
    return " ".join(str(exc).split())


class DropUserErrorTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and is_user_error(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_user_error_tracebacks() -> None:
    """Prefect logs each failed task and flow with its traceback (2-4 of them per error). For a user
    mistake the one-line message is the whole story: drop the traceback from the console (the Prefect UI
    and API logs keep it); ``--debug`` keeps everything."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, DropUserErrorTracebacks) for f in handler.filters
        ):
            handler.addFilter(DropUserErrorTracebacks())


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) received: the run stops as on Ctrl-C, reporting its end on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame) -> None:
    raise Interrupted(signum)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM becomes an exception, like Ctrl-C's KeyboardInterrupt: the flow run is marked crashed, the MLflow
    run KILLED, the lock released and the temporary server stopped, instead of the process vanishing with its
    run left RUNNING. (Prefect's own SIGTERM bridge, active while a flow runs, hands the signal on to this one
    once it has reported the crash.)"""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
