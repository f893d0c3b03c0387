"""A real Dask cluster on this machine: ``dask scheduler`` plus N single-threaded ``dask worker`` processes
on 127.0.0.1 (free ports), as the nightly flow reaches one through ``execution.dask_address``. Used by
``tests/test_dask_cluster.py`` and ``bench/nightly_scale.py --dask-workers``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The `dask scheduler` / `dask worker` commands, run with this interpreter.
DASK_SCHEDULER = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
DASK_WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalDaskCluster:
    """A running ``dask scheduler`` and its ``dask worker`` processes (each in its own process group: the
    worker's nanny and the worker it starts)."""

    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)

    def rss_gb(self) -> dict[str, float]:
        """Resident memory now of the scheduler and of each worker's largest process (its nanny and the
        worker it runs are separate processes; each is bounded on its own), in GB, from /proc."""
        groups = {os.getpgid(w.pid): f"worker-{i}" for i, w in enumerate(self.workers) if w.poll() is None}
        found = {"scheduler": _rss_gb(self.scheduler.pid)}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pgid = int(stat.read_text().rsplit(")", 1)[1].split()[2])
            except (OSError, IndexError, ValueError):
                continue
            if pgid in groups:
                name = groups[pgid]
                found[name] = max(found.get(name, 0.0), _rss_gb(int(stat.parent.name)))
        return found

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i``'s nanny and worker together: a machine lost, nothing restarts it."""
        os.killpg(self.workers[i].pid, signal.SIGKILL)
        self.workers[i].wait(timeout=20)

    def kill_all_workers(self) -> None:
        """Every worker gone for good: the cluster has a scheduler and no worker."""
        for i in range(len(self.workers)):
            self.kill_worker(i)


def _rss_gb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


@contextmanager
def local_dask_cluster(
    folder: Path, n_workers: int = 2, env: dict | None = None, memory_limit: str = "auto"
) -> Iterator[LocalDaskCluster]:
    """A scheduler on 127.0.0.1 with ``n_workers`` single-threaded worker processes (logs and scratch under
    ``folder``), each with ``dask worker --memory-limit`` (its nanny restarts a worker past 95% of it; Dask
    spills stored results to disk from 60%); all stopped on exit."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    # Workers import the project's tasks by name; one BLAS/torch thread each so N workers fill N cores.
    env = {**(env or os.environ), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    logs = Path(folder) / "dask-logs"
    logs.mkdir(parents=True, exist_ok=True)
    scheduler = [*DASK_SCHEDULER, "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"]
    log = open(logs / "scheduler.log", "w")  # noqa: SIM115 (open while the scheduler runs)
    cluster = LocalDaskCluster(address, subprocess.Popen(scheduler, env=env, stdout=log, stderr=subprocess.STDOUT))
    procs = [cluster.scheduler]
    try:
        for i in range(n_workers):
            worker = [*DASK_WORKER, address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"]
            worker += ["--host", "127.0.0.1", "--local-directory", str(Path(folder) / f"worker-{i}")]
            worker += ["--memory-limit", memory_limit]
            out = open(logs / f"worker-{i}.log", "w")  # noqa: SIM115
            cluster.workers.append(
                subprocess.Popen(worker, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            )
            procs.append(cluster.workers[-1])
        deadline = time.monotonic() + 60
        with Client(address, timeout=60) as client:
            while len(client.scheduler_info()["workers"]) < n_workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("dask workers did not start: " + (logs / "worker-0.log").read_text()[-2000:])
                time.sleep(0.2)
        yield cluster
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
