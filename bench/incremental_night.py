"""An incremental night against a cold one on the same input: cost, and whether the audiences are equal.

    python bench/incremental_night.py --users 1000000 --changed 0.01 --models item_ridge
    python bench/incremental_night.py --users 1000000 --changed 0.01 --models item_ridge item_logreg popularity random

Night 1 runs ``lookalike nightly`` on a synthetic contract folder (as bench/nightly_scale.py makes it).
Night 2's folder is night 1's with ``--changed`` of the users (drawn uniformly, seeds included) given 5 new
interactions each. Night 2 then runs twice, each as cron starts it (a fresh process): incrementally, in
night 1's output root (it finds night 1's models and staging), and cold, in a fresh output root. Both share
one Prefect home (as a scheduled deployment does), so neither pays the database set-up. Printed: wall, CPU
and peak RSS per run, the seconds of the tasks that differ, how many user rows each model applied, and
whether every published audience of the two night-2 runs is equal, row for row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, scale_synthetic  # noqa: E402
from bench.nightly_scale import run_nightly, write_config  # noqa: E402

TASKS = ("prepare_data", "train_model", "evaluate_model", "stage_audiences")


def night_two(day1: Path, day2: Path, fraction: float, seed: int = 11) -> int:
    """Copy ``day1`` to ``day2`` and give ``fraction`` of the users 5 new interactions (items drawn from
    the interaction log, so popular items stay popular). Returns how many users changed."""
    shutil.copytree(day1, day2)
    inter = pl.read_parquet(day1 / "interactions.parquet")
    users = inter["user_id"].unique().sort()
    rng = np.random.default_rng(seed)
    active = users.gather(rng.choice(len(users), int(fraction * len(users)), replace=False))
    new_rows = inter.sample(5 * len(active), seed=seed).with_columns(
        user_id=active.to_frame().select(pl.col("user_id").repeat_by(5).explode())["user_id"]
    )
    pl.concat([inter, new_rows]).write_parquet(day2 / "interactions.parquet")
    return len(active)


def task_seconds(run: dict) -> dict[str, float]:
    """Seconds per task name (summed over its runs), from the times tasks finished."""
    out, previous = {}, 0.0
    for at, name, _ in run["finished"]:
        out[name] = out.get(name, 0.0) + at - previous
        previous = at
    return out


def applied_rows(log: str) -> dict[str, int]:
    """Users (re-)embedded / rows applied per model, from train_model's log line."""
    return {m: int(n) for m, n in re.findall(r"trained (\S+) \(\S+\) in .*?, (\d+) users \(re-\)embedded", log)}


def published(root: Path) -> dict[str, pl.DataFrame]:
    """campaign -> the live audience under an output root (the LATEST run's published files)."""
    from lookalike_models.publishing import read_latest

    audiences = root / "audiences"
    return {p.parent.name: pl.read_parquet(p) for p in audiences.glob(f"run_id={read_latest(audiences)}/*/*.parquet")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=300_000)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of users with new activity")
    parser.add_argument("--models", nargs="+", default=["item_ridge"])
    args = parser.parse_args()

    from lookalike_models.synthetic import write_synthetic

    print(f"machine: {machine()}; models: {', '.join(args.models)}")
    with tempfile.TemporaryDirectory(prefix="lookalike-incremental-") as tmp:
        tmp = Path(tmp)
        synthetic = scale_synthetic(args.users, args.campaigns)
        day1 = write_synthetic(synthetic, tmp / "day1")
        changed = night_two(day1, tmp / "day2", args.changed)
        env = {
            **os.environ,
            "PREFECT_HOME": str(tmp / "prefect"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/ml.db",
            "PYTHONPATH": str(ROOT),
        }
        runs = {}
        for label, data, root in (
            ("night 1, cold", day1, "inc"),
            ("night 2, incremental", tmp / "day2", "inc"),
            ("night 2, cold", tmp / "day2", "cold"),
        ):
            (tmp / root).mkdir(exist_ok=True)
            config = write_config(tmp / root, data, args.models, tmp / root / "runs", {})
            runs[label] = run_nightly(config, env)
        n_inter = pl.scan_parquet(tmp / "day2" / "interactions.parquet").select(pl.len()).collect().item()
        print(
            f"\n{args.users:,} users, {n_inter:,} interactions on night 2, {args.campaigns} campaigns; "
            f"{changed:,} users ({args.changed:.1%}) with new activity on night 2\n"
        )
        print(
            "| run | wall (s) | CPU (s) | peak RSS (GB) | "
            + " | ".join(f"{t} (s)" for t in TASKS)
            + " | user rows applied |\n|"
            + "---|" * (5 + len(TASKS))
        )
        for label, run in runs.items():
            seconds = task_seconds(run)
            print(
                f"| {label} | {run['wall_s']:.0f} | {run['cpu_s']:.0f} | {run['peak_rss_gb']:.1f} | "
                + " | ".join(f"{seconds.get(t, 0.0):.1f}" for t in TASKS)
                + f" | {json.dumps(applied_rows(run['log']))} |"
            )
        inc = published(tmp / "inc" / "runs")
        cold = published(tmp / "cold" / "runs")
        equal = sum(inc.get(cid) is not None and inc[cid].equals(frame) for cid, frame in cold.items())
        print(f"\nnight 2 audiences equal to the cold run's, row for row: {equal} of {len(cold)}")


if __name__ == "__main__":
    main()
