"""Thread limits shared by the whole process: a block that asks for one BLAS thread must give the process its
BLAS threads back however many threads were inside the block together."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.linalg
from threadpoolctl import threadpool_info, threadpool_limits

from lookalike_models.threads import one_blas_thread


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def interleave(block) -> list[list[int]]:
    """Two threads in ``block`` together, the first in leaving first (the order threadpoolctl's own context
    restores wrongly); the BLAS thread counts each saw inside."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside: list[list[int]] = []

    def first():
        with block():
            first_in.set()
            second_in.wait(10)
            inside.append(blas_threads())
            scipy.linalg.cho_factor(np.eye(50) * 2.0)
        first_out.set()

    def second():
        first_in.wait(10)
        with block():
            second_in.set()
            first_out.wait(10)
            inside.append(blas_threads())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return inside


def test_one_blas_thread_gives_the_threads_back_when_threads_leave_it_in_any_order():
    before = blas_threads()
    if not before or max(before) < 2:
        pytest.skip(f"BLAS runs on one thread already here ({before})")
    inside = interleave(one_blas_thread)
    assert len(inside) == 2 and all(max(counts) == 1 for counts in inside)
    assert blas_threads() == before


def test_threadpoolctls_own_context_is_what_lost_them():
    """The failure the helper exists for, shown: the same interleaving through threadpoolctl's context leaves
    the process on one BLAS thread (if this ever passes, threadpoolctl fixed it and the helper may go)."""
    before = blas_threads()
    if not before or max(before) < 2:
        pytest.skip(f"BLAS runs on one thread already here ({before})")
    try:
        interleave(lambda: threadpool_limits(1, "blas"))
        assert max(blas_threads()) == 1
    finally:
        threadpool_limits(max(before), "blas")
