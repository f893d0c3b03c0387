"""A real Dask cluster on this machine: ``dask scheduler`` plus N single-threaded ``dask worker`` processes
on 127.0.0.1 (free ports), as the nightly flow reaches one through ``execution.dask_address``. Used by
``tests/test_dask_cluster.py`` and ``bench/nightly_scale.py --dask-workers``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The `dask scheduler` / `dask worker` commands, run with this interpreter.
DASK_SCHEDULER = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
DASK_WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_dask_cluster(folder: Path, n_workers: int = 2, env: dict | None = None) -> Iterator[str]:
    """tcp address of a scheduler with ``n_workers`` single-threaded worker processes (logs and scratch
    under ``folder``); all stopped on exit."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    # Workers import the project's tasks by name; one BLAS/torch thread each so N workers fill N cores.
    env = {**(env or os.environ), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    logs = Path(folder) / "dask-logs"
    logs.mkdir(parents=True, exist_ok=True)
    scheduler = [*DASK_SCHEDULER, "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"]
    procs = [subprocess.Popen(scheduler, env=env, stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    try:
        for i in range(n_workers):
            worker = [*DASK_WORKER, address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"]
            worker += ["--host", "127.0.0.1", "--local-directory", str(Path(folder) / f"worker-{i}")]
            procs.append(
                subprocess.Popen(worker, env=env, stdout=open(logs / f"worker-{i}.log", "w"), stderr=subprocess.STDOUT)
            )
        deadline = time.monotonic() + 60
        with Client(address, timeout=60) as client:
            while len(client.scheduler_info()["workers"]) < n_workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("dask workers did not start: " + (logs / "worker-0.log").read_text()[-2000:])
                time.sleep(0.2)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
