"""MovieLens-100K as look-alike data (Harper & Konstan, ACM TiiS 2015).

A movie with enough raters becomes a campaign whose converters are its raters. The campaign names its
movie (``campaign_features.item_id``) so the pipeline drops that movie's ratings before training:
otherwise "rated this movie" would leak the label into every model.
User features: age (continuous and bucketed), gender, occupation, zip region; multi-valued ``genres``
(genres the user rated most, campaign movies excluded) and ``history`` (recent movies).

Knobs (``MovieLensOptions``, ``data.movielens``): ``n_meta_campaigns`` > 0 adds that many more movies
(>= ``meta_min_raters`` raters, none of the campaigns above) as ``meta_movie_<id>`` campaigns: tasks for
meta-training, kept out of the user features like the campaigns themselves. Off by default.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lookalike_models.adapters import choose_campaign_items, shared_data_root
from lookalike_models.adapters.options import MovieLensOptions
from lookalike_models.contract import (
    CAMPAIGN_ID,
    DOMAIN,
    ITEM_ID,
    LABEL,
    RATING,
    TS,
    USER_ID,
    WEIGHT,
    FeatureSchema,
    write_dataset,
)

GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def _read(source: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    ratings = pl.read_csv(
        source / "u.data", separator="\t", has_header=False, new_columns=[USER_ID, ITEM_ID, RATING, TS]
    )
    users = pl.read_csv(
        source / "u.user",
        separator="|",
        has_header=False,
        new_columns=[USER_ID, "age", "gender", "occupation", "zip"],
        schema_overrides={"zip": pl.String},
    )
    raw_items = (source / "u.item").read_bytes().decode("latin-1")
    rows = [line.split("|") for line in raw_items.splitlines() if line.strip()]
    items = pl.DataFrame(
        {
            ITEM_ID: [int(r[0]) for r in rows],
            "release": [r[2] for r in rows],
            "genres": [[g for g, flag in zip(GENRES, r[5:24]) if flag == "1"] for r in rows],
        }
    )
    return ratings, users, items


def build(out: str | Path, source: str | Path | None = None, options: MovieLensOptions | None = None) -> Path:
    """Write MovieLens-100K as a contract folder at ``out``; returns it. ``options``: the adapter's knobs
    (``data.movielens``; defaults when None)."""
    options = options or MovieLensOptions()
    source = Path(source) if source else shared_data_root() / "movielens-100k"
    ratings, users, items = _read(source)
    raters = ratings.group_by(ITEM_ID).len()
    chosen, meta = choose_campaign_items(raters, options)
    name = pl.when(pl.col(ITEM_ID).is_in(list(meta))).then(pl.lit("meta_movie_")).otherwise(pl.lit("movie_"))
    campaign_items = [*chosen.tolist(), *list(meta)]
    seeds = ratings.filter(pl.col(ITEM_ID).is_in(campaign_items)).select(
        pl.concat_str(name, pl.col(ITEM_ID).cast(pl.String)).alias(CAMPAIGN_ID),
        USER_ID,
        pl.lit(1, pl.Int8).alias(LABEL),
    )
    interactions = ratings.with_columns(pl.col(RATING).cast(pl.Float32).alias(WEIGHT), pl.lit("movies").alias(DOMAIN))
    # Features are built from non-campaign movies only, for the same leakage reason.
    organic = interactions.filter(~pl.col(ITEM_ID).is_in(campaign_items))
    top = (
        organic.join(items.select(ITEM_ID, "genres"), on=ITEM_ID)
        .explode("genres")
        .group_by(USER_ID, "genres")
        .len()
        .sort(USER_ID, "len", "genres", descending=[False, True, False])
        .group_by(USER_ID, maintain_order=True)
        .agg(pl.col("genres").head(options.top_genres))
    )
    history = (
        organic.sort(USER_ID, TS, descending=[False, True])
        .group_by(USER_ID, maintain_order=True)
        .agg(pl.col(ITEM_ID).head(options.history_len).alias("history"))
    )
    user_features = (
        users.with_columns(
            pl.col("age").cast(pl.Float32),
            (pl.col("age") // 10).cast(pl.Int64).alias("age_bucket"),
            pl.col("zip").str.slice(0, 1).alias("zip_region"),
        )
        .join(top, on=USER_ID, how="left")
        .join(history, on=USER_ID, how="left")
        .select(USER_ID, "age", "age_bucket", "gender", "occupation", "zip_region", "genres", "history")
    )
    campaign_features = items.filter(pl.col(ITEM_ID).is_in(campaign_items)).select(
        pl.concat_str(name, pl.col(ITEM_ID).cast(pl.String)).alias(CAMPAIGN_ID),
        ITEM_ID,
        pl.col("genres").list.first().fill_null("unknown").alias("main_genre"),
        pl.col("release").str.slice(-4, 3).fill_null("unknown").alias("decade"),
    )
    continuous = ["age"]
    if options.activity_feature:
        activity = organic.group_by(USER_ID).agg(pl.len().cast(pl.Float32).log1p().alias("activity"))
        user_features = user_features.join(activity, on=USER_ID, how="left").with_columns(
            pl.col("activity").fill_null(0.0)
        )
        continuous.append("activity")
    schema = FeatureSchema(
        user_single=["age_bucket", "gender", "occupation", "zip_region"],
        user_multi=["genres", "history"],
        user_continuous=continuous,
        campaign_single=["main_genre", "decade"],
    )
    return write_dataset(
        out, interactions.select(USER_ID, ITEM_ID, TS, WEIGHT, DOMAIN), seeds, schema, user_features, campaign_features
    )
