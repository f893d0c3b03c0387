"""Thread limits shared by the whole process: a block that asks for one BLAS thread gives the process its
BLAS threads back only when the last thread inside it leaves, whatever order threads enter and leave in."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.linalg
from threadpoolctl import threadpool_info

from lookalike_models.threads import one_blas_thread


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_one_blas_thread_holds_until_the_last_thread_leaves_it():
    before = blas_threads()
    if not before or max(before) < 2:
        pytest.skip(f"BLAS runs on one thread already here ({before})")
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[list[int]] = []

    def first():
        with one_blas_thread():
            first_in.set()
            second_in.wait(10)
            scipy.linalg.cho_factor(np.eye(50) * 2.0)
        first_out.set()

    def second():  # enters after the first thread and leaves after it
        first_in.wait(10)
        with one_blas_thread():
            second_in.set()
            first_out.wait(10)

    # The flow's thread enters first (BLAS limits set from the main thread take effect for every thread:
    # OpenBLAS ignores a later thread's own setting once the main thread has set one).
    with one_blas_thread():
        seen.append(blas_threads())
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        seen.append(blas_threads())  # both threads left: still limited while this block runs
    assert first_out.is_set() and all(max(counts) == 1 for counts in seen)
    assert blas_threads() == before


def test_nested_one_blas_thread_restores_once():
    before = blas_threads()
    with one_blas_thread():
        with one_blas_thread():
            pass
        if before and max(before) > 1:
            assert max(blas_threads()) == 1  # the inner block's exit did not restore
    assert blas_threads() == before
