"""The same nightly on one process and on a real Dask cluster (``dask scheduler`` + N worker processes):
are the published audiences identical, and what does each cost?

    python bench/cluster_equality.py --users 1000000 --campaigns 100 --models pinterest_ensemble popularity \
        --publish pinterest_ensemble --dask-workers 2 --out bench/results/cluster_equality_1m.md

One synthetic contract folder (not timed); each night runs in a fresh ``lookalike nightly`` process with its
own output root (so the cluster night fits its models again: the two nights share nothing but the input).
Audiences are compared per campaign as Parquet tables (user ids, scores, ranks): identical or not, and the
overlap of user ids where they are not. Peak memory: the flow process's own (``os.wait4``), and the
scheduler's and each worker's largest process, sampled from /proc every half second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.nightly_scale import run_nightly, write_config  # noqa: E402


class ClusterMemory:
    """Samples the cluster's processes' resident memory every half second while the block runs."""

    def __init__(self, cluster, every: float = 0.5):
        import threading

        self.cluster, self.every, self.peaks = cluster, every, {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.done.wait(self.every):
            for name, gb in self.cluster.rss_gb().items():
                self.peaks[name] = max(self.peaks.get(name, 0.0), gb)

    def __enter__(self) -> ClusterMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def published(output_root: Path) -> dict[str, pl.DataFrame]:
    from lookalike_models.publishing import read_latest

    run = read_latest(output_root / "audiences")
    folder = output_root / "audiences" / f"run_id={run}"
    return {p.parent.name.split("=", 1)[1]: pl.read_parquet(p) for p in sorted(folder.glob("campaign_id=*/*.parquet"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--models", nargs="+", default=["pinterest_ensemble", "popularity"])
    parser.add_argument("--publish", default="pinterest_ensemble", help="the model whose audiences are compared")
    parser.add_argument("--params", default="{}", help="JSON of model -> params")
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from bench.common import scale_synthetic
    from bench.dask_cluster import local_dask_cluster
    from lookalike_models.synthetic import write_synthetic

    lines = [
        "# Local night vs cluster night: published audiences",
        "",
        f"Command: `python bench/cluster_equality.py {' '.join(sys.argv[1:])}`; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores; models {', '.join(args.models)}; audiences of `{args.publish}` compared.",
        "",
        "| night | wall (s) | CPU of the flow process (s) | flow peak RSS (GB) |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="lookalike-equality-") as tmp:
        tmp = Path(tmp)
        data_dir = write_synthetic(scale_synthetic(args.users, args.campaigns, 30.0), tmp / "data")
        env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/ml.db"}
        env["PYTHONPATH"] = str(ROOT)
        params = json.loads(args.params)
        nights = {}
        for night in ("local", "cluster"):
            out = tmp / night
            (tmp / night).mkdir()
            config = write_config(tmp / night, data_dir, args.models, out, params)
            sets = (f"publish.model={args.publish}",)
            if night == "cluster":
                with local_dask_cluster(tmp / "dask", args.dask_workers, env) as cluster:
                    sets += ("execution.backend=dask", f"execution.dask_address={cluster.address}")
                    sets += (f"execution.shards={args.shards}",)
                    with ClusterMemory(cluster) as memory:
                        result = run_nightly(config, env, overrides=sets)
                    cluster_peaks = memory.peaks
            else:
                result = run_nightly(config, env, overrides=sets)
            nights[night] = published(out)
            lines.append(f"| {night} | {result['wall_s']:.0f} | {result['cpu_s']:.0f} | {result['peak_rss_gb']:.2f} |")
            print(lines[-1], flush=True)
        local, cluster = nights["local"], nights["cluster"]
        same = [cid for cid in local if cid in cluster and local[cid].equals(cluster[cid])]
        overlap = [
            len(set(local[cid]["user_id"]) & set(cluster[cid]["user_id"])) / max(local[cid].height, 1)
            for cid in local
            if cid in cluster
        ]
    lines += [
        "",
        "Peak RSS of the cluster's processes during the cluster night (GB, each worker's largest process): "
        + ", ".join(f"{name} {gb:.2f}" for name, gb in sorted(cluster_peaks.items()))
        + ".",
        "",
        f"Campaigns published: local {len(local)}, cluster {len(cluster)}; **identical audiences (user, score, "
        f"rank): {len(same)} of {len(local)}**; user overlap min {min(overlap, default=float('nan')):.4f}, mean "
        f"{sum(overlap) / max(len(overlap), 1):.4f}.",
    ]
    print("\n".join(lines[-4:]))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
