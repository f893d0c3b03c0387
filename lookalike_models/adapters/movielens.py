"""MovieLens-100K as look-alike data (Harper & Konstan, ACM TiiS 2015).

A movie with enough raters becomes a campaign whose converters are its raters. The campaign names its
movie (``campaign_features.item_id``) so the pipeline drops that movie's ratings before training:
otherwise "rated this movie" would leak the label into every model.
User features: age (continuous and bucketed), gender, occupation, zip region; multi-valued ``genres``
(genres the user rated most, campaign movies excluded) and ``history`` (recent movies).

``n_meta_campaigns`` > 0 adds that many more movies (>= ``meta_min_raters`` raters, none of the campaigns
above) as ``meta_movie_<id>`` campaigns: tasks for meta-training, kept out of the user features like the
campaigns themselves. Off by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lookalike_models.adapters import shared_data_root
from lookalike_models.contract import FeatureSchema, write_dataset

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]


def _read(source: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    ratings = pl.read_csv(source / "u.data", separator="\t", has_header=False,
                          new_columns=["user_id", "item_id", "rating", "ts"])
    users = pl.read_csv(source / "u.user", separator="|", has_header=False,
                        new_columns=["user_id", "age", "gender", "occupation", "zip"],
                        schema_overrides={"zip": pl.String})
    raw_items = (source / "u.item").read_bytes().decode("latin-1")
    rows = [line.split("|") for line in raw_items.splitlines() if line.strip()]
    items = pl.DataFrame({
        "item_id": [int(r[0]) for r in rows],
        "release": [r[2] for r in rows],
        "genres": [[g for g, flag in zip(GENRES, r[5:24]) if flag == "1"] for r in rows],
    })
    return ratings, users, items


def build(out: str | Path, source: str | Path | None = None, n_campaigns: int = 40, min_raters: int = 50,
          max_raters: int = 400, top_genres: int = 3, history_len: int = 50, seed: int = 0,
          n_meta_campaigns: int = 0, meta_min_raters: int = 20, activity_feature: bool = False) -> Path:
    """Write MovieLens-100K as a contract folder at ``out``; returns it."""
    source = Path(source) if source else shared_data_root() / "movielens-100k"
    ratings, users, items = _read(source)
    raters = ratings.group_by("item_id").len()
    eligible = raters.filter(pl.col("len").is_between(min_raters, max_raters)).sort("item_id")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible["item_id"].to_numpy(), min(n_campaigns, eligible.height), replace=False))
    meta_pool = raters.filter((pl.col("len") >= meta_min_raters) & ~pl.col("item_id").is_in(chosen.tolist()))
    meta = np.sort(rng.choice(meta_pool.sort("item_id")["item_id"].to_numpy(),
                              min(n_meta_campaigns, meta_pool.height), replace=False)) if n_meta_campaigns else []
    name = pl.when(pl.col("item_id").is_in(list(meta))).then(pl.lit("meta_movie_")).otherwise(pl.lit("movie_"))
    campaign_items = [*chosen.tolist(), *list(meta)]
    seeds = (ratings.filter(pl.col("item_id").is_in(campaign_items))
             .select(pl.concat_str(name, pl.col("item_id").cast(pl.String)).alias("campaign_id"), "user_id",
                     pl.lit(1, pl.Int8).alias("label")))
    interactions = ratings.with_columns(pl.col("rating").cast(pl.Float32).alias("weight"),
                                        pl.lit("movies").alias("domain"))
    # Features are built from non-campaign movies only, for the same leakage reason.
    organic = interactions.filter(~pl.col("item_id").is_in(campaign_items))
    top = (organic.join(items.select("item_id", "genres"), on="item_id").explode("genres")
           .group_by("user_id", "genres").len().sort("user_id", "len", "genres", descending=[False, True, False])
           .group_by("user_id", maintain_order=True).agg(pl.col("genres").head(top_genres)))
    history = (organic.sort("user_id", "ts", descending=[False, True])
               .group_by("user_id", maintain_order=True).agg(pl.col("item_id").head(history_len).alias("history")))
    user_features = (users.with_columns(
        pl.col("age").cast(pl.Float32),
        (pl.col("age") // 10).cast(pl.Int64).alias("age_bucket"),
        pl.col("zip").str.slice(0, 1).alias("zip_region"))
        .join(top, on="user_id", how="left").join(history, on="user_id", how="left")
        .select("user_id", "age", "age_bucket", "gender", "occupation", "zip_region", "genres", "history"))
    campaign_features = (items.filter(pl.col("item_id").is_in(campaign_items)).select(
        pl.concat_str(name, pl.col("item_id").cast(pl.String)).alias("campaign_id"), "item_id",
        pl.col("genres").list.first().fill_null("unknown").alias("main_genre"),
        pl.col("release").str.slice(-4, 3).fill_null("unknown").alias("decade")))
    continuous = ["age"]
    if activity_feature:
        activity = organic.group_by("user_id").agg(pl.len().cast(pl.Float32).log1p().alias("activity"))
        user_features = user_features.join(activity, on="user_id", how="left").with_columns(
            pl.col("activity").fill_null(0.0))
        continuous.append("activity")
    schema = FeatureSchema(user_single=["age_bucket", "gender", "occupation", "zip_region"],
                           user_multi=["genres", "history"], user_continuous=continuous,
                           campaign_single=["main_genre", "decade"])
    return write_dataset(out, interactions.select("user_id", "item_id", "ts", "weight", "domain"), seeds,
                         schema, user_features, campaign_features)
