"""Where the nightly refresh's time goes: each stage of the flow timed around the library calls it wraps.

    python bench/stage_breakdown.py --users 100000 300000 --campaigns 100
    python bench/stage_breakdown.py --users 1000000 --models item_ridge popularity random

The stages are the nightly flow's (flows/nightly_refresh.py) without Prefect: encode the contract folder
(read, validate, map ids, save), split, then per model fit + save and held-out evaluation of every
campaign (protocol.evaluate_campaigns), then the champion (``--champion``, item_ridge) scores and stages
every campaign's audience from all its seeds, publishing copies them into place, and tracking logs the
model folders to a local MLflow store. Per stage: wall and process CPU seconds (CPU/wall < 1 means the
box was shared or the stage waited on disk) and the process's peak RSS during that stage (VmHWM, reset
at each stage's start; everything still held from earlier stages counts). The physical floor beside
each stage is an estimate of the work it must do (flops or bytes, see ``floor_note``), at rates measured
on this box at start-up (one core's dense GEMM rate and memory copy bandwidth).

Synthetic data as bench/nightly_scale.py makes it (seed 3, n_items = max(5000, n_users / 20), ~20
distinct items per user, 100 campaigns of up to 2000 seeds); generated first, not timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

ROWS: list[dict] = []


def peak_rss_gb() -> float:
    """Peak RSS since the last ``reset_peak`` (Linux VmHWM), else of the whole process."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1e6
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def reset_peak() -> None:
    """Start a new peak-RSS window (writing 5 to clear_refs resets VmHWM), so each stage shows its own
    peak, not the untimed data generation's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


@contextmanager
def stage(name: str, floor: str = ""):
    reset_peak()
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    row = {
        "stage": name,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_gb": peak_rss_gb(),
        "floor": floor,
    }
    ROWS.append(row)
    print(
        f"  {name:<34} wall {row['wall_s']:7.1f}s  cpu {row['cpu_s']:7.1f}s  peak {row['peak_gb']:.1f} GB  {floor}",
        flush=True,
    )


def machine_rates() -> tuple[float, float]:
    """(GFLOP/s of one dense float64 GEMM, GB/s of a large copy) on this box now."""
    a = np.random.default_rng(0).random((1500, 1500))
    start = time.perf_counter()
    a @ a
    gflops = 2 * 1500**3 / (time.perf_counter() - start) / 1e9
    big, out = np.ones(50_000_000, np.float32), np.zeros(50_000_000, np.float32)  # both touched: no page faults
    start = time.perf_counter()
    np.copyto(out, big)
    gbs = 2 * big.nbytes / (time.perf_counter() - start) / 1e9  # read + write
    return gflops, gbs


def floor_note(flops: float = 0.0, bytes_: float = 0.0) -> str:
    seconds = flops / (GFLOPS * 1e9) + bytes_ / (GBS * 1e9)
    parts = ([f"{flops / 1e9:.1f} GFLOP"] if flops else []) + ([f"{bytes_ / 1e9:.2f} GB moved"] if bytes_ else [])
    return f"floor ~{seconds:.2f}s ({', '.join(parts)})"


GFLOPS, GBS = 1.0, 1.0


def run_size(n_users: int, campaigns: int, models: list[str], champion: str, tmp: Path) -> None:
    import polars as pl

    from bench.common import scale_synthetic
    from lookalike_models.catalog import build_scorer
    from lookalike_models.config import DataSource
    from lookalike_models.evaluation import audience_size, audience_sizes, holdout_split, save_split
    from lookalike_models.io import write_parquet_atomic
    from lookalike_models.pipeline import score_campaign
    from lookalike_models.protocol import evaluate_campaigns
    from lookalike_models.publishing import audience_frame, audience_path
    from lookalike_models.sources import load_encoded
    from lookalike_models.synthetic import write_synthetic

    synthetic = scale_synthetic(n_users, campaigns)
    folder = write_synthetic(synthetic, tmp / "data")
    n_rows = pl.scan_parquet(folder / "interactions.parquet").select(pl.len()).collect().item()
    print(f"\n{n_users:,} users, {n_rows:,} interactions, {campaigns} campaigns (generated, not timed)", flush=True)
    ROWS.clear()

    with stage("encode (read, validate, map ids, save)", floor_note(bytes_=n_rows * 8 * 2 * 4)):
        data = load_encoded(DataSource(kind="folder", path=str(folder)), tmp / "input")
        data.save(tmp / "encoded")
    nnz = data.user_idx.size
    seed_rows = sum(seeds.size for seeds in data.campaigns.values())
    with stage("split (hold out 10% per campaign)", floor_note(bytes_=seed_rows * 8 * 4)):
        train, heldout = holdout_split(data.campaigns, data.n_users, 0.1, 0)
        save_split(train, heldout, tmp / "split.parquet")
    sizes = audience_sizes(data.n_users, [0.01, 0.02, 0.05, 0.1])
    fitted = {}
    for name in models:
        scorer = build_scorer(name)
        with stage(f"fit+save {name}", fit_floor(name, scorer, data, train)):
            scorer.fit(data, train)
            try:
                scorer.save(tmp / "models" / name)
            except NotImplementedError:
                pass
        fitted[name] = scorer
        with stage(f"evaluate {name} ({len(heldout)} campaigns)", score_floor(name, scorer, data, len(heldout))):
            evaluate_campaigns(scorer, data, train, heldout, sizes, [50, 200])
    size = audience_size(data.n_users, 0.05)
    staged = {}
    with stage(
        f"score+stage {champion} ({len(data.campaigns)} campaigns)",
        score_floor(champion, fitted[champion], data, len(data.campaigns)),
    ):
        for cid, seeds in data.campaigns.items():
            scored = score_campaign(fitted[champion], data, seeds, size)
            frame = audience_frame(data, scored.users, scored.scores, champion)
            staged[cid] = write_parquet_atomic(frame, tmp / "staged" / f"{cid}.parquet")
    with stage("publish (copy into place)", floor_note(bytes_=sum(p.stat().st_size for p in staged.values()) * 2)):
        for cid, path in staged.items():
            target = audience_path(tmp / "audiences", "bench", cid)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    from lookalike_models.scorers import REFRESH_STATE

    # What the flow logs to MLflow: the model folders without the next night's cache (refresh_state/).
    tracked = [p for p in (tmp / "models").glob("*/*") if p.name != REFRESH_STATE]
    model_bytes = sum(f.stat().st_size for p in tracked for f in [p, *p.rglob("*")] if f.is_file())
    with stage(f"track (MLflow: model folders, {model_bytes / 1e6:.0f} MB)", floor_note(bytes_=model_bytes * 2)):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/ml.db"
        from tasks import tracking

        parent = tracking.start_run("bench-stages", "night", {})
        for name in models:
            child = tracking.start_run("bench-stages", name, {}, parent_run_id=parent)
            for part in (p for p in tracked if p.parent.name == name):
                tracking.log_artifact(child, part, "model" if part.is_file() else f"model/{part.name}")
            tracking.end_run(child)
        tracking.log_artifact(parent, tmp / "audiences", "audiences")
        tracking.end_run(parent)
    total_wall = sum(r["wall_s"] for r in ROWS)
    total_cpu = sum(r["cpu_s"] for r in ROWS)
    print(
        f"\n| stage ({n_users:,} users, {nnz:,} interactions) | wall (s) | CPU (s) | peak RSS (GB) | physical floor |"
    )
    print("|---|---|---|---|---|")
    for r in ROWS:
        print(f"| {r['stage']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_gb']:.1f} | {r['floor']} |")
    print(
        f"| **total** | **{total_wall:.1f}** | **{total_cpu:.1f}** | {max(r['peak_gb'] for r in ROWS):.1f} | |",
        flush=True,
    )


def fit_floor(name: str, scorer, data, train) -> str:
    nnz = data.user_idx.size
    if name == "item_ridge":
        n = min(scorer.config.max_items, data.n_items)
        per_user = nnz / max(data.n_users, 1)
        # Gram: sum over users of (items per user)^2 multiply-adds; then one n^3/3 Cholesky.
        return floor_note(flops=2 * data.n_users * per_user**2 + n**3 / 3, bytes_=nnz * 12)
    if name == "item_logreg":
        # TF-IDF (count, transform, normalise the CSR), then every training campaign's fit over its
        # sampled rows (~10 passes of a gradient and a Hessian-vector product: ~4 flops per non-zero each)
        sampled = nnz * min(scorer.config.max_negatives, data.n_users) / data.n_users
        return floor_note(flops=len(train) * 10 * 4 * sampled, bytes_=nnz * 12 * 3)
    return floor_note(bytes_=data.n_users * 8)


def score_floor(name: str, scorer, data, n_campaigns: int) -> str:
    nnz, n = data.user_idx.size, data.n_users
    if name == "item_ridge":
        # X @ w per campaign (2 flops per non-zero, the CSR read once for all campaigns at best),
        # plus a linear top-k pass over every user's score.
        return floor_note(flops=2 * nnz * n_campaigns, bytes_=nnz * 12 + n_campaigns * n * 4 * 2)
    if name == "item_logreg":  # the campaigns' models were fitted in fit: one pass scoring every user each
        return floor_note(flops=n_campaigns * 2 * nnz, bytes_=n_campaigns * n * 4 * 2)
    return floor_note(bytes_=n_campaigns * n * 4 * 2)


def main() -> None:
    global GFLOPS, GBS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--models", nargs="+", default=["item_ridge", "item_logreg", "popularity", "random"])
    parser.add_argument("--champion", default="item_ridge")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    GFLOPS, GBS = machine_rates()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs), Python "
        f"{platform.python_version()}; measured {GFLOPS:.0f} GFLOP/s dense float64 GEMM, {GBS:.1f} GB/s copy"
    )
    for n_users in args.users:
        with tempfile.TemporaryDirectory(prefix="lookalike-stages-") as tmp:
            run_size(n_users, args.campaigns, args.models, args.champion, Path(tmp))


if __name__ == "__main__":
    main()
