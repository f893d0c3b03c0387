"""Which failures a task retries: transient I/O only. A bug or bad input fails the same way every time, so
retrying it only delays the error (and, for a flow's last tasks, the alert)."""

from __future__ import annotations

# OSErrors that are not transient: the file is not there, or we may not read it.
PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_transient(exc: BaseException) -> bool:
    """I/O errors that another try may not meet: a network file system hiccup, a timeout, a reset connection."""
    return isinstance(exc, OSError) and not isinstance(exc, PERMANENT_OS_ERRORS)


def retry_on_io_error(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed run only when its exception is transient I/O."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False
