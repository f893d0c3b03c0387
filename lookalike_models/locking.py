"""One run per output root: an advisory file lock that the operating system releases when the holder dies.

Two runs writing the same output root would race on ``LATEST``, the work folder's cache and the MLflow
store. ``fcntl.flock`` is released by the kernel when the process exits, even on ``kill -9``, so a
crashed run never leaves a stale lock behind; the file only keeps a note of who holds it, for the
message the second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".run.lock"


class RunLockedError(RuntimeError):
    """Another run holds the output root. The message says who and what to do."""


@contextmanager
def exclusive_run(folder: str | Path, holder: str = "") -> Iterator[Path]:
    """Hold ``<folder>/.run.lock`` for the duration of the block, or raise :class:`RunLockedError` at once."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"another run is using output root {folder} ({_describe(path)}); wait for it to "
                f"finish or give this run another output_root"
            ) from None
        note = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "holder": holder,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(note).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _describe(path: Path) -> str:
    try:
        note = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    if not note:
        return "holder unknown"
    return f"pid {note.get('pid')} on {note.get('host')}, {note.get('holder') or 'a run'} since {note.get('since')}"


@contextmanager
def serialized(path: str | Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on ``path`` (e.g. the first write to a shared SQLite store,
    whose schema creation races when two processes start together)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
