"""How many threads a step should use: the cores this process may run on that other processes are not
already keeping busy. Nightly jobs share machines; a step that starts as many threads as the machine has
cores beside busy neighbours spends its time waiting for cores and switching between threads."""

from __future__ import annotations

import os
from contextlib import contextmanager


def free_cores() -> int:
    """Cores this process may use less the load of the last minute that is not its own, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    # The load average counts this process too (about one core while it computes).
    return max(1, min(cores, int(round(cores - max(load - 1.0, 0.0)))))


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
