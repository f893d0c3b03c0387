"""The temporary Prefect server of a CLI run, started so that it lives exactly as long as the run.

Prefect starts its temporary server (``SubprocessASGIServer``) as a plain child process, which had two
consequences for an operator:

- Ctrl-C at the terminal goes to the whole foreground process group, server included: the server died at
  once, and the run, still reporting its state, printed ``Unable to connect to ws://...`` for minutes, ended
  with ``ConnectError`` and left its flow run RUNNING. Here the server runs in its own session: Ctrl-C
  reaches the run only, which reports its end to a live server, then stops the server on its way out.
- ``kill -9`` of the run left the server running, re-parented to PID 1. Here the kernel sends the server
  SIGTERM when the run dies (Linux ``PR_SET_PDEATHSIG``), and the server's pid is recorded in
  ``PREFECT_HOME`` (``lookalike-server-<pid>.json``), so the next run stops one that is still there
  (``reap_stale_servers``).

Used only without ``PREFECT_API_URL``: a configured server (or a test harness) is used as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

RECORDS = "lookalike-server-*.json"  # one per running temporary server, named by its pid
SERVER_APP = "prefect.server.api.server:create_app"

# Runs in the server's process before uvicorn: die with the parent (the thread that started the server,
# the CLI's main thread), and never run at all if the parent is already gone.
_LAUNCHER = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def _server_class():
    import subprocess

    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class RunScopedServer(SubprocessASGIServer):
        """Prefect's temporary server, in its own session and terminated by the kernel when the run dies."""

        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect 3.8's command and environment, started through the launcher above.
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            uvicorn = ["-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory", SERVER_APP]
            uvicorn += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
            return subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *uvicorn], env=env, start_new_session=True
            )

    return RunScopedServer


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): the signal test is all there is
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def record_path(prefect_home: Path, pid: int) -> Path:
    return prefect_home / RECORDS.replace("*", str(pid))


def reap_stale_servers(prefect_home: Path, wait_seconds: float = 5.0) -> list[int]:
    """Stop the temporary servers recorded in ``prefect_home`` whose run is gone (killed with -9 where the
    kernel could not stop them); returns the pids stopped. A server whose run is alive is left alone."""
    stopped = []
    for record in sorted(prefect_home.glob(RECORDS)):
        try:
            note = json.loads(record.read_text())
            pid, parent = int(note["pid"]), int(note["parent"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(parent) and parent != os.getpid():
            continue  # its run is still going (another run on the same PREFECT_HOME)
        if _alive(pid) and SERVER_APP in _cmdline(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + wait_seconds
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            stopped.append(pid)
        record.unlink(missing_ok=True)
    return stopped


def _forget(record: Path) -> None:
    record.unlink(missing_ok=True)


@contextlib.contextmanager
def run_scoped_server() -> Iterator[str | None]:
    """Start Prefect's temporary server for this run (see the module docstring); yields its API URL, or None
    when ``PREFECT_API_URL`` names a server already. The server stops when the process exits (Prefect's own
    ``atexit``), after the run has reported its end, and with the process on ``kill -9``."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value():
        yield None
        return
    home = Path(PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    reap_stale_servers(home)
    server = _server_class()(port=_free_port())
    previous = SubprocessASGIServer._instances.get(None)
    SubprocessASGIServer._instances[None] = server  # Prefect's own get_client() finds this one, running
    try:
        server.start()
        pid = server.server_process.pid
        record = record_path(home, pid)
        record.write_text(json.dumps({"pid": pid, "parent": os.getpid(), "port": server.port}))
        import atexit

        atexit.register(_forget, record)
        yield server.api_url
    finally:
        # The server itself stays up until exit: Prefect's log and event workers still send to it.
        if previous is not None:
            SubprocessASGIServer._instances[None] = previous
