"""Amazon Books -> Movies & TV dense subset as two-domain look-alike data (Ni, Li & McAuley, EMNLP 2019).

Source: ``amazon-books-movies-dense`` (explicit 1-5 star ratings, Amazon reviewer ids, ASINs read as strings:
many have leading zeros). Books is the source domain, Movies & TV the target domain; each interaction carries
its ``domain`` ("books" / "movies") and its star rating as ``rating`` and ``weight``.

The raw files repeat some (user, item) pairs (re-reviews); the last row in file order is kept. This is the
deduplication under which predicting the global mean gives MAE 0.830 / RMSE 1.083 on Movies.

Campaigns follow the MovieLens adapter: a target-domain movie with enough raters is a campaign, its raters
the converters, and the campaign names its movie (``campaign_features.item_id``) so the pipeline drops that
movie's ratings before training.

Additive options (``AmazonOptions``, ``data.amazon``; off by default): ``user_history=True`` writes
multi-valued user fields ``books`` and ``movies`` (the items each user rated; campaign movies excluded, so
they do not leak the label) for feature-based models such as MetaHeac; ``n_meta_campaigns`` > 0 adds that
many more movies (>= ``meta_min_raters`` raters, none of the campaigns above) as ``meta_movie_<id>``
campaigns for meta-training, also kept out of the user fields. ``activity_feature=True`` (with
``user_history``) adds a continuous ``activity`` field: log of 1 + the user's non-campaign ratings.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from lookalike_models.adapters import choose_campaign_items, shared_data_root
from lookalike_models.adapters.options import AmazonOptions
from lookalike_models.contract import (
    CAMPAIGN_ID,
    DOMAIN,
    ITEM_ID,
    LABEL,
    RATING,
    USER_ID,
    WEIGHT,
    FeatureSchema,
    write_dataset,
)

FILES = {"books": "Amazon-Books-Dense.inter", "movies": "Amazon-Movies-Dense.inter"}
SOURCE_DOMAIN, TARGET_DOMAIN = "books", "movies"


def read_ratings(source: str | Path | None = None) -> pl.DataFrame:
    """Deduplicated ratings of both domains: user_id, item_id (str), rating (float32), domain (str)."""
    source = Path(source) if source else shared_data_root() / "amazon-books-movies-dense"
    parts = []
    for domain, name in FILES.items():
        raw = pl.read_csv(
            source / name, separator="\t", schema_overrides={USER_ID: pl.String, ITEM_ID: pl.String, RATING: pl.Float32}
        )
        parts.append(
            raw.unique([USER_ID, ITEM_ID], keep="last", maintain_order=True).with_columns(pl.lit(domain).alias(DOMAIN))
        )
    books, movies = parts
    shared = books.join(movies, on=ITEM_ID, how="semi")
    if shared.height:  # the domains must not share item ids, or encode() would merge their items
        raise ValueError(f"item ids shared by books and movies, e.g. {shared['item_id'][0]}")
    return pl.concat(parts)


def build(out_dir: str | Path, source_path: str | Path | None = None, options: AmazonOptions | None = None) -> Path:
    """Write the Books/Movies subset as a contract folder at ``out_dir``; returns it. ``options``: the
    adapter's knobs (``data.amazon``; defaults when None)."""
    options = options or AmazonOptions()
    ratings = read_ratings(source_path)
    movies = ratings.filter(pl.col(DOMAIN) == TARGET_DOMAIN)
    raters = movies.group_by(ITEM_ID).len()
    chosen, meta = choose_campaign_items(raters, options)
    campaign_ids = [f"movie_{i}" for i in chosen] + [f"meta_movie_{i}" for i in meta]
    campaign_items = [*chosen.tolist(), *list(meta)]
    seeds = (
        movies.filter(pl.col(ITEM_ID).is_in(campaign_items))
        .join(pl.DataFrame({CAMPAIGN_ID: campaign_ids, ITEM_ID: campaign_items}), on=ITEM_ID)
        .select(CAMPAIGN_ID, USER_ID, pl.lit(1, pl.Int8).alias(LABEL))
    )
    interactions = ratings.select(USER_ID, ITEM_ID, RATING, pl.col(RATING).alias(WEIGHT), DOMAIN)
    campaign_features = pl.DataFrame({CAMPAIGN_ID: campaign_ids, ITEM_ID: campaign_items})
    schema, user_features = FeatureSchema(), None
    if options.user_history:
        organic = ratings.filter(~pl.col(ITEM_ID).is_in(campaign_items))
        user_features = (
            ratings.select(USER_ID)
            .unique()
            .sort(USER_ID)
            .join(
                organic.group_by(USER_ID, DOMAIN).agg(ITEM_ID).pivot(DOMAIN, index=USER_ID, values=ITEM_ID),
                on=USER_ID,
                how="left",
            )
        )
        for domain in FILES:
            if domain not in user_features.columns:
                user_features = user_features.with_columns(pl.lit(None, pl.List(pl.String)).alias(domain))
        # The pivot's columns come in the order its group_by met the domains (it varies run to run): fixed here,
        # so the same input writes the same file (and the same content fingerprint).
        user_features = user_features.select(USER_ID, *FILES)
        schema = FeatureSchema(user_multi=list(FILES))
        if options.activity_feature:
            activity = organic.group_by(USER_ID).agg(pl.len().cast(pl.Float32).log1p().alias("activity"))
            user_features = user_features.join(activity, on=USER_ID, how="left").with_columns(
                pl.col("activity").fill_null(0.0)
            )
            schema = FeatureSchema(user_multi=list(FILES), user_continuous=["activity"])
    return write_dataset(out_dir, interactions, seeds, schema, user_features, campaign_features)
