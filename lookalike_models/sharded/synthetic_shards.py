"""Synthetic data with ``synthetic.generate``'s planted structure, written straight into a sharded folder one
shard at a time, so no process holds more than one shard's interactions (10M users / 200M interactions).

Drawn once from ``cfg.seed``: the items' communities and Zipf popularity, each community's feature values,
each campaign's communities and seed count, and how each campaign's converters split across shards (in
proportion to the shards' users: communities are uniform, so that is the eligible weight's expectation).
Drawn per shard from ``default_rng([cfg.seed, shard])``: its users' communities, log-normal activity,
interactions, features, and its share of each campaign's seeds (activity-weighted converters from the
campaign's communities, ``seed_noise`` random converters, ``negatives_per_seed`` non-converters from
outside). User ids are ``1_000_000 + g`` for g in [0, n_users); a shard's users are the ids that
``store.shard_of`` sends to it. The data differs from ``generate``'s draw by draw, not in structure.

    python -m lookalike_models.sharded.synthetic_shards --users N --campaigns C --shards S --out DIR
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from lookalike_models.contract import CAMPAIGN_ID, DOMAIN, ITEM_ID, LABEL, TS, USER_ID, WEIGHT, FeatureSchema
from lookalike_models.io import atomic_directory
from lookalike_models.sharded.store import shard_of
from lookalike_models.sharded.store_writer import ShardedWriter
from lookalike_models.synthetic import SyntheticConfig, _zipf_weights

FIRST_USER_ID = 1_000_000
SCHEMA = FeatureSchema(
    user_single=["age_bucket", "gender", "region"],
    user_multi=["interests"],
    user_continuous=["activity"],
    campaign_single=["category", "advertiser", "objective"],
)


@dataclass
class GlobalDraws:
    """What every shard shares, drawn once from ``cfg.seed``."""

    item_order: np.ndarray  # items sorted by community
    cum: np.ndarray  # cumulative popularity in that order
    comm_start: np.ndarray
    comm_end: np.ndarray
    age_by_comm: np.ndarray
    region_by_comm: np.ndarray
    topic_by_comm: np.ndarray  # [n_communities, 3]
    campaign_comms: list[np.ndarray]
    converters: np.ndarray  # int64 [n_campaigns, n_shards]: activity-weighted converters per shard
    noise: np.ndarray  # int64 [n_campaigns, n_shards]: random converters per shard


def shard_labels(n_users: int, n_shards: int, chunk: int = 1_000_000) -> np.ndarray:
    """The shard of user ``FIRST_USER_ID + g`` for every g (int16 [n_users]), hashed a chunk at a time."""
    labels = np.empty(n_users, np.int16)
    for lo in range(0, n_users, chunk):
        ids = pl.Series(np.arange(lo, min(lo + chunk, n_users), dtype=np.int64) + FIRST_USER_ID)
        labels[lo : lo + ids.len()] = shard_of(ids, n_shards)
    return labels


def global_draws(cfg: SyntheticConfig, shard_sizes: np.ndarray) -> GlobalDraws:
    rng = np.random.default_rng(cfg.seed)
    n_c = cfg.n_communities
    item_comm = rng.integers(0, n_c, cfg.n_items)
    popularity = _zipf_weights(cfg.n_items, cfg.zipf_exponent, rng)
    order = np.argsort(item_comm, kind="stable")
    cum = np.cumsum(popularity[order])
    comm_end = cum[np.searchsorted(item_comm[order], np.arange(n_c), side="right") - 1]
    share = shard_sizes / shard_sizes.sum()
    comms, converters, noise = [], [], []
    for _ in range(cfg.n_campaigns):
        comms.append(rng.choice(n_c, size=rng.integers(1, 4), replace=False))
        n_seeds = int(np.exp(rng.uniform(np.log(cfg.min_seeds), np.log(cfg.max_seeds))))
        n_noise = int(round(cfg.seed_noise * n_seeds))
        converters.append(rng.multinomial(n_seeds - n_noise, share))
        noise.append(rng.multinomial(n_noise, share))
    return GlobalDraws(
        order,
        cum,
        np.concatenate([[0.0], comm_end[:-1]]),
        comm_end,
        rng.integers(0, 6, n_c),
        rng.integers(0, 40, n_c),
        rng.integers(0, max(8, n_c), (n_c, 3)),
        comms,
        np.array(converters, np.int64),
        np.array(noise, np.int64),
    )


def _interactions(
    cfg: SyntheticConfig, draws: GlobalDraws, community: np.ndarray, counts: np.ndarray, rng
) -> pl.DataFrame:
    """Local-user interactions as ``generate`` draws them: ``community_affinity`` from the community's items."""
    n_i = cfg.n_items
    users = np.repeat(np.arange(community.size), counts)
    from_comm = rng.random(users.size) < cfg.community_affinity
    u = rng.random(users.size)
    c = community[users]
    target = np.where(from_comm, draws.comm_start[c] + u * (draws.comm_end[c] - draws.comm_start[c]), u * draws.cum[-1])
    items = draws.item_order[np.minimum(np.searchsorted(draws.cum, target), n_i - 1)]
    key, weight = np.unique(users * n_i + items, return_counts=True)
    users, items = key // n_i, key % n_i
    domain_names = np.array(["source", "target"] if cfg.n_domains == 2 else ["default", "default"])
    return pl.DataFrame(
        {
            "local": users,
            ITEM_ID: items + 1,
            TS: 1_700_000_000 + rng.integers(0, 30 * 86_400, users.size),
            WEIGHT: weight.astype(np.float32),
            DOMAIN: domain_names[items % 2],
        }
    )


def _features(cfg: SyntheticConfig, draws: GlobalDraws, community: np.ndarray, counts: np.ndarray, rng) -> dict:
    n_u, n_topics = community.size, max(8, cfg.n_communities)

    def noisy(values_by_comm: np.ndarray, n_values: int) -> np.ndarray:
        random_values = rng.integers(0, n_values, n_u)
        return np.where(rng.random(n_u) < cfg.feature_noise, random_values, values_by_comm[community])

    age = noisy(draws.age_by_comm, 6).astype(np.int64)
    gender = rng.choice(np.array(["f", "m", "u"]), n_u, p=[0.48, 0.48, 0.04])
    region = np.array([f"r{r}" for r in range(40)], dtype=object)[noisy(draws.region_by_comm, 40)]
    interest_count = rng.integers(1, 5, n_u)
    picks = draws.topic_by_comm[community[:, None], rng.integers(0, 3, (n_u, 4))]
    picks = np.where(rng.random((n_u, 4)) < cfg.feature_noise, rng.integers(0, n_topics, (n_u, 4)), picks)
    # A list column from flat values and offsets: a Python list per user is minutes at 10M users.
    flat = picks[np.arange(4)[None, :] < interest_count[:, None]]
    offsets = np.concatenate([[0], np.cumsum(interest_count)]).astype(np.int32)
    topic_names = np.array([f"topic_{t}" for t in range(n_topics)], dtype=object)
    interests = pl.from_arrow(pa.ListArray.from_arrays(pa.array(offsets), pa.array(topic_names[flat], pa.string())))
    return {
        "age_bucket": age,
        "gender": gender,
        "region": pl.Series(region, dtype=pl.String),
        "interests": interests,
        "activity": np.log1p(counts).astype(np.float32),
    }


def _seeds(
    cfg: SyntheticConfig, draws: GlobalDraws, shard: int, community: np.ndarray, counts: np.ndarray, rng
) -> list:
    """This shard's share of every campaign's seed list, in local user indices: (campaign, pos, neg)."""
    rows = []
    for k, comms in enumerate(draws.campaign_comms):
        in_comms = np.isin(community, comms)
        eligible = np.flatnonzero(in_comms)
        n_from = min(int(draws.converters[k, shard]), eligible.size)
        p = counts[eligible] / counts[eligible].sum() if eligible.size else None
        pos = rng.choice(eligible, n_from, replace=False, p=p) if n_from else np.empty(0, np.int64)
        free = np.ones(community.size, bool)
        free[pos] = False
        others = np.flatnonzero(free)
        noise = rng.choice(others, min(int(draws.noise[k, shard]), others.size), replace=False)
        pos = np.concatenate([pos, noise]).astype(np.int64)
        free[noise] = False
        outside = np.flatnonzero(free & ~in_comms)
        neg = rng.choice(outside, min(int(cfg.negatives_per_seed * pos.size), outside.size), replace=False)
        rows.append((f"c{k:03d}", pos, neg.astype(np.int64)))
    return rows


def write_synthetic_shards(cfg: SyntheticConfig, n_shards: int, folder: str | Path) -> Path:
    """Write the synthetic data set as a sharded folder (``store.py``); atomically, replacing ``folder``."""
    labels = shard_labels(cfg.n_users, n_shards)
    sizes = np.bincount(labels, minlength=n_shards)
    draws = global_draws(cfg, sizes)
    sigma = 0.8
    seed_frames = []
    with atomic_directory(folder) as tmp:
        writer = ShardedWriter(tmp, n_shards, SCHEMA)
        for shard in range(n_shards):
            rng = np.random.default_rng([cfg.seed, shard])
            ids = np.flatnonzero(labels == shard).astype(np.int64) + FIRST_USER_ID
            community = rng.integers(0, cfg.n_communities, ids.size)
            counts = rng.lognormal(np.log(cfg.interactions_per_user) - sigma**2 / 2, sigma, ids.size)
            counts = np.clip(np.round(counts), 2, None).astype(np.int64)
            interactions = _interactions(cfg, draws, community, counts, rng)
            writer.add_interactions(
                interactions.with_columns(pl.Series(USER_ID, ids[interactions["local"]])).drop("local")
            )
            features = _features(cfg, draws, community, counts, rng)
            writer.add_user_features(pl.DataFrame({USER_ID: ids, **features}))
            del interactions, features  # one shard's rows at a time
            for cid, pos, neg in _seeds(cfg, draws, shard, community, counts, rng):
                labels_k = np.concatenate([np.ones(pos.size, np.int8), np.zeros(neg.size, np.int8)])
                users = ids[np.concatenate([pos, neg])]
                # An explicit String column: a campaign with no seed in this shard must not make it Null-typed.
                campaign = pl.Series(CAMPAIGN_ID, [cid] * users.size, dtype=pl.String)
                seed_frames.append(pl.DataFrame([campaign, pl.Series(USER_ID, users), pl.Series(LABEL, labels_k)]))
        campaigns = pl.DataFrame(
            {
                CAMPAIGN_ID: [f"c{k:03d}" for k in range(cfg.n_campaigns)],
                "category": [f"cat{int(c[0]) % 8}" for c in draws.campaign_comms],
                "advertiser": [f"adv{k % 5}" for k in range(cfg.n_campaigns)],
                "objective": [["click", "install", "buy"][k % 3] for k in range(cfg.n_campaigns)],
            }
        )
        writer.finish(pl.concat(seed_frames).sort(CAMPAIGN_ID, maintain_order=True), campaigns)
    return Path(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic sharded data folder.")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--interactions-per-user", type=float, default=20.0, help="mean draws (before dedup)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.shards < 1:
            raise ValueError(f"--shards must be >= 1, got {args.shards}")
        knobs = {
            "n_users": args.users,
            "n_campaigns": args.campaigns,
            "seed": args.seed,
            "interactions_per_user": args.interactions_per_user,
        }
        cfg = SyntheticConfig(**knobs, **({"n_items": args.items} if args.items else {}))
        write_synthetic_shards(cfg, args.shards, args.out)
    except ValueError as exc:  # pydantic's ValidationError included
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
