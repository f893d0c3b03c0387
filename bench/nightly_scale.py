"""Whole nightly refresh at scale: wall time and peak memory per population size, and a killed run resumed.

    python bench/nightly_scale.py --users 100000 300000 1000000 --campaigns 100 --models minhash
    python bench/nightly_scale.py --users 300000 --kill-after train_model --models minhash
    python bench/nightly_scale.py --users 1000000 --set execution.backend=dask --set execution.n_workers=2
    python bench/nightly_scale.py --users 1000000 --models item_ridge --dask-workers 2 --set execution.shards=2
    python bench/nightly_scale.py --users 1000000 --models pinterest_ensemble \
        --params '{"pinterest_ensemble": {"encoder": {"max_epochs": 3}}}'

Each size gets a synthetic contract folder (generated first, not timed: a nightly job reads its input,
it does not make it), then ``lookalike nightly`` runs on it in a fresh process with a fresh work folder,
as cron would start it. Peak memory is the child's max RSS. ``--kill-after TASK`` SIGKILLs the run as
soon as TASK has completed (the machine dies mid-run), then starts it again and counts the tasks that
came back from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench.dask_cluster, when run as a script
LOOKALIKE = [sys.executable, "-m", "flows.cli"]


def write_config(folder: Path, data_dir: Path, models: list[str], out: Path, params: dict) -> Path:
    config = yaml.safe_load((ROOT / "conf" / "nightly.yaml").read_text())
    config["data"] = {"kind": "folder", "path": str(data_dir)}
    config["models"] = [{"name": m, "model": m, "params": params.get(m, {})} for m in models]
    config["selection"]["not_eligible"] = []
    if config["evaluation"].get("reference") not in models:  # the paired comparison needs its reference
        config["evaluation"].pop("reference", None)
    config["output_root"] = str(out)
    config["experiment"] = "bench-nightly-scale"
    path = folder / "nightly.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_nightly(config: Path, env: dict, kill_after: str | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """One ``lookalike nightly`` process; returns wall seconds, peak RSS and how many tasks were cached."""
    start = time.perf_counter()
    sets = [arg for item in overrides for arg in ("--set", item)]
    proc = subprocess.Popen(
        [*LOOKALIKE, "nightly", "--config", str(config), *sets],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines, killed, finished = [], False, []
    rss = RSSSampler(proc.pid, start)
    for line in proc.stdout:
        lines.append(line)
        task = re.search(r"Task run '([a-z_-]+?)-[0-9a-z]+' - Finished in state (\w+)", line)
        if task:  # tasks of the local flow run one after another: a task's time = since the previous one ended
            finished.append((time.perf_counter() - start, task.group(1), task.group(2)))
        done = rf"Task run '{re.escape(kill_after or '')}-[0-9a-z]+' - Finished in state Completed"
        if kill_after and re.search(done, line):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, not the max over earlier runs
    rss.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    text = "".join(lines)
    if proc.returncode != 0 and not killed:
        errors = [line for line in lines if re.search(r"Error|Exception|Traceback|failed", line)]
        raise RuntimeError("nightly failed:\n" + "".join(errors[:20] or lines[-30:])[:6000])
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_gb": usage.ru_maxrss / 1e6,
        "killed": killed,
        "cached_tasks": len(re.findall(r"Finished in state Cached", text)),
        "cached_names": sorted(set(re.findall(r"Task run '([a-z_-]+?)-[0-9a-z]+' - Finished in state Cached", text))),
        "completed_tasks": len(re.findall(r"Finished in state Completed", text)),
        "finished": finished,
        "rss_samples": rss.samples,
        "log": text,
    }


class RSSSampler:
    """The child's resident memory (VmRSS) every ``every`` seconds, as (seconds since start, GB): each task's
    peak is the largest sample between the previous task's end and its own."""

    def __init__(self, pid: int, start: float, every: float = 0.25):
        self.pid, self.start, self.every, self.samples = pid, start, every, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self.done.wait(self.every):
            try:
                kb = int(status.read_text().split("VmRSS:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                continue
            self.samples.append((time.perf_counter() - self.start, kb / 1e6))

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def peak_between(samples: list[tuple[float, float]], lo: float, hi: float) -> float:
    return max((gb for at, gb in samples if lo <= at <= hi), default=float("nan"))


def show_stages(r: dict) -> None:
    """Seconds per task of a run (time since the previous task finished; the first includes start-up)."""
    print("| task | state | seconds (since the previous task ended) | peak RSS in that time (GB) |\n|---|---|---|---|")
    previous, samples = 0.0, r["rss_samples"]
    for at, name, state in r["finished"]:
        print(f"| {name} | {state} | {at - previous:.1f} | {peak_between(samples, previous, at):.2f} |")
        previous = at
    tail = peak_between(samples, previous, r["wall_s"])
    print(
        f"| (after the last task: publishing, summary, exit) | | {r['wall_s'] - previous:.1f} | {tail:.2f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument(
        "--interactions-per-user",
        type=float,
        default=30.0,
        help="log-normal mean before de-duplication; 30 gives ~20 distinct items per user",
    )
    parser.add_argument("--models", nargs="+", default=["minhash"])
    parser.add_argument(
        "--params",
        default="{}",
        help='JSON of model -> params, e.g. \'{"pinterest_ensemble": {"encoder": {"max_epochs": 3}}}\'',
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="nightly config override, e.g. execution.backend=dask",
    )
    parser.add_argument(
        "--dask-workers",
        type=int,
        default=0,
        help="start a real cluster (dask scheduler + N single-threaded worker processes) and score on it",
    )
    parser.add_argument(
        "--kill-after",
        help="task (function name, e.g. train_model) whose completion kills the first run; then it is resumed",
    )
    args = parser.parse_args()

    from bench.common import scale_synthetic
    from lookalike_models.synthetic import write_synthetic

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"models: {', '.join(args.models)}"
    )
    print("| users | interactions | campaigns | run | wall (s) | CPU (s) | peak RSS (GB) | tasks cached / completed |")
    print("|---|---|---|---|---|---|---|---|")
    for n_users in args.users:
        with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
            tmp = Path(tmp)
            synthetic = scale_synthetic(n_users, args.campaigns, args.interactions_per_user)
            data_dir = write_synthetic(synthetic, tmp / "data")
            import polars as pl

            n_inter = pl.scan_parquet(data_dir / "interactions.parquet").select(pl.len()).collect().item()
            config = write_config(tmp, data_dir, args.models, tmp / "runs", json.loads(args.params))
            env = {
                **os.environ,
                "PREFECT_HOME": str(tmp / "prefect"),
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/ml.db",
                "PYTHONPATH": str(ROOT),
            }
            with ExitStack() as stack:
                sets = tuple(args.set)
                if args.dask_workers:
                    from bench.dask_cluster import local_dask_cluster

                    address = stack.enter_context(local_dask_cluster(tmp, args.dask_workers, env)).address
                    sets += ("execution.backend=dask", f"execution.dask_address={address}")
                first = run_nightly(config, env, args.kill_after, sets)
                label = f"killed at {args.kill_after}" if first["killed"] else "cold"
                show(n_users, n_inter, args.campaigns, label, first)
                show_stages(first)
                for line in re.findall(r"dask: \d+ shards .*", first["log"]):
                    print(f"\n{line}\n")  # the shard scoring alone, as the staging task timed it
                again = run_nightly(config, env, overrides=sets)
                show(n_users, n_inter, args.campaigns, "resumed" if args.kill_after else "re-run", again)
                for line in re.findall(r"dask: \d+ shards .*", again["log"]):
                    print(f"\nre-run (workers warm: data and model already loaded): {line}\n")


def show(n_users: int, n_inter: int, campaigns: int, label: str, r: dict) -> None:
    print(
        f"| {n_users:,} | {n_inter:,} | {campaigns} | {label} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} "
        f"| {r['peak_rss_gb']:.1f} "
        f"| {r['cached_tasks']} / {r['completed_tasks']} {', '.join(r['cached_names'])} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
