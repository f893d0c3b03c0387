"""TEMPORARY stand-in until the progress branch lands (same API)."""

import contextlib
import logging
import time

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, label, total, unit, every=None, clock=time.monotonic):
        self.label, self.total, self.unit, self.done = label, total, unit, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def advance(self, n=1):
        self.done += n

    def set_total(self, total):
        self.total = total


def report_progress_to(sink):
    return contextlib.nullcontext()
