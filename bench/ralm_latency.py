"""RALM serving latency vs seed-set size: flat in the seed count, because a campaign is k centroids.

    python bench/ralm_latency.py --users 1000000 --seeds 1000 10000 100000 1000000 --out bench/results/ralm_latency.md

A look-alike model (d = h = 32, k = 20) scores a population of ``--users`` users whose embeddings are
random (latency does not depend on what the weights learned). Per seed count we time:
  - recluster: transform the seeds + k-means (positions fitted on at most 100k seeds, then every seed
    assigned): the periodic centroid refresh, the only step that grows with the seeds;
  - score population: one campaign against every user from stored centroids (per campaign, per user);
  - one user: a single request (median of 200);
  - no centroids: local attention over *all* seeds instead (what centroids avoid), on 200 users.
One thread (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lookalike_models.ralm.lookalike import LookalikeModel, campaign_centroids, score_users, transform_users


def timed(fn, *args, repeat: int = 1):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - start)
    return out, float(np.median(times))


def refresh(model: LookalikeModel, embeddings: np.ndarray, positives: np.ndarray, k: int):
    """The periodic centroid refresh: transform the seeds, k-means them."""
    return campaign_centroids(model, transform_users(model, embeddings[positives]), positives, k)


@torch.no_grad()
def all_seed_attention(model: LookalikeModel, users: np.ndarray, seeds: np.ndarray, chunk: int = 20) -> np.ndarray:
    """Local attention over every transformed seed (O(users x seeds)): the cost centroids remove."""
    es = torch.from_numpy(seeds)
    out = []
    for s in range(0, users.shape[0], chunk):
        eu = torch.from_numpy(users[s : s + chunk])
        local, _ = model.local(eu, es)
        out.append(torch.nn.functional.cosine_similarity(eu, local, dim=-1).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--naive-users", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = LookalikeModel(32, 32).eval()
    embeddings = rng.normal(size=(args.users, 32)).astype(np.float32)
    transformed, transform_s = timed(lambda: transform_users(model, embeddings))
    lines = [
        f"Population {args.users:,} users, d = h = 32, k = {args.k}; {platform.processor() or platform.machine()}, "
        f"one thread (2-core CPU, shared). Population transform (once per model): {transform_s:.2f} s.",
        "",
        "| seeds | recluster (s) | score population, one campaign (s) | per user (µs) | one user (ms) "
        "| no centroids: per user (µs) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n_seeds in args.seeds:
        positives = np.sort(rng.choice(args.users, min(n_seeds, args.users), replace=False))
        campaign, recluster_s = timed(refresh, model, embeddings, positives, args.k)
        _, score_s = timed(score_users, model, transformed, campaign)
        _, one_s = timed(score_users, model, transformed[:1], campaign, repeat=200)
        _, naive_s = timed(all_seed_attention, model, transformed[: args.naive_users], transformed[positives])
        lines.append(
            f"| {n_seeds:,} | {recluster_s:.2f} | {score_s:.3f} | {score_s / args.users * 1e6:.2f} "
            f"| {one_s * 1e3:.3f} | {naive_s / args.naive_users * 1e6:,.1f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
