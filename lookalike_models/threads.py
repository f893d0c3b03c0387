"""How many threads a step should use: the cores this process may run on that other processes are not
already keeping busy. Nightly jobs share machines; a step that starts as many threads as the machine has
cores beside busy neighbours spends its time waiting for cores and switching between threads."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path


def _busy_jiffies() -> tuple[int, int]:
    """(jiffies every CPU spent busy, jiffies this process spent on CPU) since boot, from /proc."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    own = [int(x) for x in Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[11:13]]  # utime, stime
    return busy, sum(own)


def free_cores(window: float = 0.2) -> int:
    """Cores this process may use less those other processes kept busy over the last ``window`` seconds,
    at least 1. Sampled, not the load average: that one lags by a minute and counts this process's own
    threads as neighbours."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        busy0, own0 = _busy_jiffies()
        time.sleep(window)
        busy1, own1 = _busy_jiffies()
    except (OSError, ValueError, IndexError):
        return cores
    ticks = os.sysconf("SC_CLK_TCK") * window
    others = max(0.0, (busy1 - busy0) - (own1 - own0)) / ticks
    return max(1, min(cores, int(round(cores - others))))


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads (then restore). Training steps on small batches gain
    nothing from a second thread on this kind of machine (measured: 1.3 s vs 1.4 s an epoch) and lose much
    beside busy neighbours, so the training loops run on one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


_blas_lock = threading.Lock()
_blas_entered = 0
_blas_limits = None


@contextmanager
def one_blas_thread():
    """BLAS on one thread for the block (bit-identical results whatever the machine's core count), safe when
    several threads enter it at once: the first one in sets the limit, the last one out restores it.
    threadpoolctl's own context saves and restores per entry, so two threads interleaving there could leave
    the whole process on one BLAS thread for good (the ensemble's parallel members did: later models then
    computed with other bits than when run alone). OpenBLAS (0.3.31 here) ignores a setting made by a thread
    other than the main one once the main thread has made one, so a pool whose workers must run on one BLAS
    thread enters this block in the thread that starts the pool (``ridge_strength`` does)."""
    global _blas_entered, _blas_limits
    from threadpoolctl import threadpool_limits

    with _blas_lock:
        if _blas_entered == 0:
            _blas_limits = threadpool_limits(1, "blas")
        _blas_entered += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_entered -= 1
            if _blas_entered == 0:
                _blas_limits.restore_original_limits()
                _blas_limits = None
