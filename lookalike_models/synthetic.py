"""Synthetic look-alike data with planted structure: the default data of ``make run``.

Planted signal, so a model that learns can be told from one that does not:
  - every user belongs to one latent community; communities prefer their own items
    (``community_affinity`` of a user's interactions come from the community's items);
  - item popularity is long-tailed (Zipf), so "most popular" is a real but weak baseline;
  - user features (age bucket, region, interests) are correlated with the community, with noise;
  - each campaign converts users of 1-3 communities (plus ``seed_noise`` random converters), so
    the seeds' communities are recoverable from behaviour and features alone.
Deterministic for a given ``seed``; vectorised, so 1M users / 20M interactions take seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from pydantic import ConfigDict, Field

from lookalike_models.contract import (
    CAMPAIGN_ID,
    DOMAIN,
    ITEM_ID,
    LABEL,
    TS,
    USER_ID,
    WEIGHT,
    FeatureSchema,
    write_dataset,
)
from lookalike_models.strict_config import StrictConfig


class SyntheticConfig(StrictConfig):
    model_config = ConfigDict(title="Generator knobs")

    n_users: int = Field(20_000, ge=100, le=10_000_000, description="Users in the population")
    n_items: int = Field(5_000, ge=50, description="Distinct items (pins, articles, products)")
    n_communities: int = Field(24, ge=2, description="Latent behaviour communities")
    interactions_per_user: float = Field(20.0, gt=1, description="Mean interactions per user (log-normal)")
    community_affinity: float = Field(0.75, ge=0, le=1, description="Share of a user's items from their community")
    zipf_exponent: float = Field(1.1, gt=0, description="Item popularity skew")
    n_campaigns: int = Field(12, ge=1)
    min_seeds: int = Field(30, ge=2, description="Smallest seed list")
    max_seeds: int = Field(600, ge=2, description="Largest seed list (log-uniform in between)")
    seed_noise: float = Field(0.1, ge=0, le=1, description="Share of converters drawn at random")
    negatives_per_seed: float = Field(1.0, ge=0, description="Labelled non-converters per seed (label 0)")
    feature_noise: float = Field(0.3, ge=0, le=1, description="Chance a user feature ignores the community")
    n_domains: int = Field(1, ge=1, le=2, description="2 splits items into 'source' and 'target' domains")
    seed: int = 7


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return w[rng.permutation(n)]


def generate(cfg: SyntheticConfig) -> dict[str, pl.DataFrame | FeatureSchema]:
    """Return the contract tables (interactions, user_features, seeds, campaign_features, schema)."""
    rng = np.random.default_rng(cfg.seed)
    n_u, n_i, n_c = cfg.n_users, cfg.n_items, cfg.n_communities
    community = rng.integers(0, n_c, n_u)
    item_comm = rng.integers(0, n_c, n_i)
    popularity = _zipf_weights(n_i, cfg.zipf_exponent, rng)

    # Items grouped by community; one cumulative-popularity array serves global and per-community draws.
    order = np.argsort(item_comm, kind="stable")
    cum = np.cumsum(popularity[order])
    comm_end = cum[np.searchsorted(item_comm[order], np.arange(n_c), side="right") - 1]
    comm_start = np.concatenate([[0.0], comm_end[:-1]])

    sigma = 0.8
    counts = rng.lognormal(np.log(cfg.interactions_per_user) - sigma**2 / 2, sigma, n_u)
    counts = np.clip(np.round(counts), 2, None).astype(np.int64)
    users = np.repeat(np.arange(n_u), counts)
    from_comm = rng.random(users.size) < cfg.community_affinity
    u = rng.random(users.size)
    c = community[users]
    target = np.where(from_comm, comm_start[c] + u * (comm_end[c] - comm_start[c]), u * cum[-1])
    items = order[np.minimum(np.searchsorted(cum, target), n_i - 1)]
    key, weight = np.unique(users * n_i + items, return_counts=True)
    users, items = key // n_i, key % n_i
    domain_of_item = np.where(np.arange(n_i) % 2 == 0, "source", "target") if cfg.n_domains == 2 else None
    interactions = pl.DataFrame(
        {
            USER_ID: users + 1_000_000,
            ITEM_ID: items + 1,
            TS: 1_700_000_000 + rng.integers(0, 30 * 86_400, users.size),
            WEIGHT: weight.astype(np.float32),
            DOMAIN: domain_of_item[items] if domain_of_item is not None else np.full(users.size, "default"),
        }
    )

    def noisy(values_by_comm: np.ndarray, n_values: int) -> np.ndarray:
        random_values = rng.integers(0, n_values, n_u)
        return np.where(rng.random(n_u) < cfg.feature_noise, random_values, values_by_comm[community])

    n_topics = max(8, n_c)
    topic_by_comm = rng.integers(0, n_topics, (n_c, 3))
    interest_count = rng.integers(1, 5, n_u)
    picks = topic_by_comm[community[:, None], rng.integers(0, 3, (n_u, 4))]
    picks = np.where(rng.random((n_u, 4)) < cfg.feature_noise, rng.integers(0, n_topics, (n_u, 4)), picks)
    interests = [[f"topic_{t}" for t in row[:k]] for row, k in zip(picks.tolist(), interest_count.tolist())]
    user_features = pl.DataFrame(
        {
            USER_ID: np.arange(n_u) + 1_000_000,
            "age_bucket": noisy(rng.integers(0, 6, n_c), 6).astype(np.int64),
            "gender": rng.choice(["f", "m", "u"], n_u, p=[0.48, 0.48, 0.04]),
            "region": [f"r{r}" for r in noisy(rng.integers(0, 40, n_c), 40)],
            "interests": interests,
            "activity": np.log1p(counts).astype(np.float32),
        }
    )

    seed_rows, campaign_rows = [], []
    all_users = np.arange(n_u)
    for k in range(cfg.n_campaigns):
        cid = f"c{k:03d}"
        comms = rng.choice(n_c, size=rng.integers(1, 4), replace=False)
        n_seeds = int(np.exp(rng.uniform(np.log(cfg.min_seeds), np.log(cfg.max_seeds))))
        eligible = all_users[np.isin(community, comms)]
        n_noise = int(round(cfg.seed_noise * n_seeds))
        n_from = min(n_seeds - n_noise, eligible.size)
        # Heavier users convert more often: propensity grows with activity.
        p = counts[eligible] / counts[eligible].sum()
        pos = rng.choice(eligible, n_from, replace=False, p=p)
        noise = rng.choice(np.setdiff1d(all_users, pos, assume_unique=True), n_noise, replace=False)
        pos = np.concatenate([pos, noise])
        # assume_unique: both are sets already, and numpy's hash-based unique is slow at millions of users
        outside = np.setdiff1d(all_users[~np.isin(community, comms)], pos, assume_unique=True)
        n_neg = min(int(cfg.negatives_per_seed * pos.size), outside.size)
        neg = rng.choice(outside, n_neg, replace=False)
        seed_rows.append(
            pl.DataFrame(
                {
                    CAMPAIGN_ID: cid,
                    USER_ID: np.concatenate([pos, neg]) + 1_000_000,
                    LABEL: np.concatenate([np.ones(pos.size, np.int8), np.zeros(neg.size, np.int8)]),
                }
            )
        )
        campaign_rows.append(
            {
                CAMPAIGN_ID: cid,
                "category": f"cat{int(comms[0]) % 8}",
                "advertiser": f"adv{k % 5}",
                "objective": ["click", "install", "buy"][k % 3],
            }
        )
    schema = FeatureSchema(
        user_single=["age_bucket", "gender", "region"],
        user_multi=["interests"],
        user_continuous=["activity"],
        campaign_single=["category", "advertiser", "objective"],
    )
    return {
        "interactions": interactions,
        "user_features": user_features,
        "seeds": pl.concat(seed_rows),
        "campaign_features": pl.DataFrame(campaign_rows),
        "schema": schema,
    }


def write_synthetic(cfg: SyntheticConfig, folder: str | Path) -> Path:
    return write_dataset(folder, **generate(cfg))
