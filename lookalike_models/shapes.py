"""Derived data shapes: the same contract tables cut into a different shape, to show a result travels.

- ``keep_users``: a seeded sample of ``n`` users with all their interactions (no item is filtered), so a
  set like MovieLens-100K restricted to a few hundred users has more items than users (a long tail).
- ``drop_popular_items``: the most-engaged items (by distinct users, per domain) removed from the
  interactions and from multi-valued user fields that list item ids; a campaign's own item is never
  dropped (its engagers are the campaign's seeds).
- ``sparsify_histories``: a seeded share of users keep only a few of their organic items (log-uniform in
  1..``sparse_max_items``), so many seeds, held out or not, have the short histories of new users; the
  campaigns' own items are never cut (they are the labels).

Both take and return a ``RawDataset`` (ids as the advertiser gave them), so ``sources.load_encoded`` applies
them (``data.shape``) before encoding and every consumer, the nightly flow and the benchmarks, sees the
same shape. Campaigns the shape leaves without seeds become campaign problems (``missing_campaigns``);
campaigns with too few seeds to hold any out are trained on but not evaluated, as everywhere.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import numpy as np
import polars as pl
from pydantic import BeforeValidator, Field

from lookalike_models.contract import CAMPAIGN_ID, DOMAIN, ITEM_ID, USER_ID, RawDataset
from lookalike_models.strict_config import StrictConfig


class ShapeConfig(StrictConfig):
    """``data.shape``: defaults change nothing."""

    max_users: Annotated[int, BeforeValidator(lambda v: 0 if v is None else v)] = Field(
        0, ge=0, description="Keep a seeded sample of this many users (all their items); 0: every user"
    )
    drop_popular_share: float = Field(
        0.0, ge=0, lt=1, description="Remove this share of each domain's most-engaged items (campaign items kept)"
    )
    sparse_share: float = Field(0.0, ge=0, le=1, description="Share of users whose history is cut short")
    sparse_max_items: int = Field(20, ge=1, description="Most organic items a cut-short user keeps")
    seed: int = Field(0, description="Seed of the user sample and of the cut histories")

    @property
    def is_identity(self) -> bool:
        return not self.max_users and self.drop_popular_share == 0 and self.sparse_share == 0


def campaign_items(raw: RawDataset) -> list:
    """Item ids the campaigns name as their own (``campaign_features.item_id``)."""
    cf = raw.campaign_features
    if cf is None or ITEM_ID not in cf.columns:
        return []
    return cf[ITEM_ID].drop_nulls().unique().to_list()


def keep_users(raw: RawDataset, n_users: int, seed: int = 0) -> RawDataset:
    """The ``n_users`` users (of those with interactions) a seeded draw picks, with all their interactions,
    seeds and features; other users leave the population. Unchanged when there are no more users than that."""
    users = raw.interactions[USER_ID].unique().sort()
    if users.len() <= n_users:
        return raw
    picked = np.sort(np.random.default_rng(seed).choice(users.len(), n_users, replace=False))
    kept = users.gather(picked)
    return replace(
        raw,
        interactions=raw.interactions.filter(pl.col(USER_ID).is_in(kept.implode())),
        seeds=raw.seeds.filter(pl.col(USER_ID).is_in(kept.implode())),
        user_features=None
        if raw.user_features is None
        else raw.user_features.filter(pl.col(USER_ID).is_in(kept.implode())),
    )


def popular_items(raw: RawDataset, share: float) -> pl.Series:
    """Per domain, the ``share`` of its items (rounded up) with the most distinct users, campaign items not
    counted and never chosen; ties broken by item id, so the choice is deterministic."""
    own = campaign_items(raw)
    engagers = (
        raw.interactions.filter(~pl.col(ITEM_ID).is_in(pl.Series(own, dtype=raw.interactions.schema[ITEM_ID])))
        .group_by(DOMAIN, ITEM_ID)
        .agg(pl.col(USER_ID).n_unique().alias("engagers"))
        .sort(DOMAIN, "engagers", ITEM_ID, descending=[False, True, False])
    )
    top = engagers.group_by(DOMAIN, maintain_order=True).agg(
        pl.col(ITEM_ID).head(pl.len().cast(pl.Float64).mul(share).ceil().cast(pl.UInt32))
    )
    if not top.height:
        return pl.Series(ITEM_ID, [], raw.interactions.schema[ITEM_ID])
    return top.explode(ITEM_ID)[ITEM_ID].drop_nulls()


def drop_popular_items(raw: RawDataset, share: float) -> RawDataset:
    """``raw`` without the interactions with each domain's ``share`` most-engaged items (``popular_items``),
    and without those items in multi-valued user fields whose values have the item ids' type (e.g.
    MovieLens' ``history``). Users left without interactions stay only if they have features."""
    if share <= 0:
        return raw
    dropped = popular_items(raw, share)
    interactions = raw.interactions.filter(~pl.col(ITEM_ID).is_in(dropped.implode()))
    user_features = raw.user_features
    if user_features is not None:
        item_type = raw.interactions.schema[ITEM_ID]
        lists = [
            name
            for name in raw.schema.user_multi
            if isinstance(user_features.schema[name], pl.List) and user_features.schema[name].inner == item_type
        ]
        if lists:  # order kept (e.g. most recent first)
            user_features = user_features.with_columns(
                pl.col(name).list.eval(pl.element().filter(~pl.element().is_in(dropped.implode()))) for name in lists
            )
    return replace(raw, interactions=interactions, user_features=user_features)


def sparsify_histories(raw: RawDataset, share: float, max_items: int, seed: int = 0) -> RawDataset:
    """``raw`` where a seeded ``share`` of the users with interactions keep only k of their distinct organic
    items (k log-uniform in 1..``max_items``, the items a uniform draw), every row of those items kept and
    the rest dropped; campaign items and seeds untouched. Multi-valued user fields holding item ids keep only
    the user's kept items (order kept)."""
    if share <= 0:
        return raw
    own = pl.Series(campaign_items(raw), dtype=raw.interactions.schema[ITEM_ID])
    organic = raw.interactions.filter(~pl.col(ITEM_ID).is_in(own.implode()))
    pairs = organic.select(USER_ID, ITEM_ID).unique().sort(USER_ID, ITEM_ID)
    users = pairs[USER_ID].unique().sort()
    rng = np.random.default_rng(seed)
    cut = users.filter(pl.Series(rng.random(users.len()) < share))
    keep_k = np.floor(np.exp(rng.uniform(0, np.log(max_items + 1), cut.len()))).clip(1, max_items).astype(np.int64)
    # A random order of each cut user's items, then its first k: a uniform draw of k items.
    ranked = pairs.join(pl.DataFrame({USER_ID: cut, "keep_k": keep_k}), on=USER_ID, maintain_order="left")
    ranked = ranked.with_columns(pl.Series("draw", rng.random(ranked.height)))
    dropped = ranked.filter(pl.col("draw").rank("ordinal").over(USER_ID) > pl.col("keep_k")).select(USER_ID, ITEM_ID)
    interactions = raw.interactions.join(dropped, on=[USER_ID, ITEM_ID], how="anti")
    user_features = raw.user_features
    if user_features is not None:
        item_type = raw.interactions.schema[ITEM_ID]
        for name in raw.schema.user_multi:
            dtype = user_features.schema[name]
            if not (isinstance(dtype, pl.List) and dtype.inner == item_type):
                continue
            exploded = user_features.select(USER_ID, name).with_row_index("_row").explode(name)
            exploded = exploded.with_row_index("_pos").join(
                dropped.rename({ITEM_ID: name}), on=[USER_ID, name], how="anti"
            )
            lists = exploded.sort("_pos").group_by("_row").agg(pl.col(name).drop_nulls())
            rebuilt = user_features.with_row_index("_row").drop(name).join(lists, on="_row", how="left")
            user_features = rebuilt.sort("_row").select(user_features.columns)
    return replace(raw, interactions=interactions, user_features=user_features)


def apply_shape(raw: RawDataset, shape: ShapeConfig) -> RawDataset:
    """``keep_users`` first, then ``drop_popular_items`` (popularity counted in the kept population), then
    ``sparsify_histories``."""
    if shape.max_users:
        raw = keep_users(raw, shape.max_users, shape.seed)
    if shape.drop_popular_share > 0:
        raw = drop_popular_items(raw, shape.drop_popular_share)
    if shape.sparse_share > 0:
        raw = sparsify_histories(raw, shape.sparse_share, shape.sparse_max_items, shape.seed)
    return raw


def missing_campaigns(before: RawDataset, after: RawDataset, shape: ShapeConfig) -> dict[str, str]:
    """Campaigns of ``before``'s seeds that have no seed row left in ``after``, with the reason."""
    gone = set(before.seeds[CAMPAIGN_ID].unique()) - set(after.seeds[CAMPAIGN_ID].unique())
    return {cid: f"campaign '{cid}': the data shape ({shape.model_dump()}) left none of its seeds" for cid in gone}
