"""The knobs of the real-data adapters, one typed record per adapter (``data.movielens``, ``data.amazon``).

Defaults are the adapters' own: a data source that sets none writes the same contract folder as before
the options existed. The Tencent sample has no knobs (its campaigns are the sample's ads), so it has no
record.
"""

from __future__ import annotations

from pydantic import Field

from lookalike_models.strict_config import StrictConfig


class CampaignItemOptions(StrictConfig):
    """Which rated items become campaigns (their raters are the seeds): shared by the rating adapters."""

    n_campaigns: int = Field(40, ge=0, description="Campaigns: items with min_raters..max_raters raters")
    min_raters: int = Field(50, ge=1, description="Fewest raters of a campaign item")
    max_raters: int = Field(400, ge=1, description="Most raters of a campaign item")
    seed: int = Field(0, description="Seed of the draw of campaign (and meta-campaign) items")
    n_meta_campaigns: int = Field(
        0,
        ge=0,
        description="More items (>= meta_min_raters raters, none of the campaigns) as meta_movie_<id> "
        "campaigns: MetaHeac's meta-training tasks, kept out of the user fields; 0: none",
    )
    meta_min_raters: int = Field(20, ge=1, description="Fewest raters of a meta-campaign item")
    activity_feature: bool = Field(
        False, description="A continuous user field 'activity': log(1 + the user's non-campaign ratings)"
    )


class MovieLensOptions(CampaignItemOptions):
    """``data.movielens``: the MovieLens-100K adapter's knobs (lookalike_models/adapters/movielens.py)."""

    top_genres: int = Field(3, ge=1, description="Genres in each user's 'genres' field (the most rated)")
    history_len: int = Field(50, ge=1, description="Most recent movies in each user's 'history' field")


class AmazonOptions(CampaignItemOptions):
    """``data.amazon``: the Amazon Books/Movies adapter's knobs (lookalike_models/adapters/amazon.py)."""

    user_history: bool = Field(
        False,
        description="Multi-valued user fields 'books' and 'movies' (the items each user rated, campaign "
        "items excluded), for feature-based models such as MetaHeac; activity_feature needs it",
    )
