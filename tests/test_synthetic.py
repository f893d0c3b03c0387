import numpy as np
import polars as pl

from lookalike_models.synthetic import SyntheticConfig, generate


def test_generator_is_deterministic_and_sized():
    cfg = SyntheticConfig(n_users=1000, n_items=300, n_campaigns=3, seed=5)
    a, b = generate(cfg), generate(cfg)
    assert a["interactions"].equals(b["interactions"]) and a["seeds"].equals(b["seeds"])
    assert a["user_features"].height == 1000
    per_user = a["interactions"].group_by("user_id").len()["len"].mean()
    assert 8 < per_user < 25
    assert not generate(cfg.model_copy(update={"seed": 6}))["interactions"].equals(a["interactions"])


def test_item_popularity_is_long_tailed():
    counts = generate(SyntheticConfig(n_users=3000, n_items=1000, seed=1))["interactions"].group_by("item_id").len()
    top = counts.sort("len", descending=True)["len"].to_numpy()
    assert top[:10].sum() > 10 * top[-10:].sum()


def test_seeds_of_a_campaign_share_behaviour_more_than_random_users():
    tables = generate(SyntheticConfig(n_users=3000, n_items=600, n_campaigns=4, seed=2))
    inter = tables["interactions"]
    seeds = tables["seeds"].filter((pl.col("campaign_id") == "c000") & (pl.col("label") == 1))["user_id"]

    def item_profile(users) -> np.ndarray:
        sub = inter.filter(pl.col("user_id").is_in(users.to_list()))
        return np.bincount(sub["item_id"].to_numpy(), minlength=602) / sub.height

    rng = np.random.default_rng(0)
    random_users = pl.Series(rng.choice(inter["user_id"].unique().to_numpy(), seeds.len(), replace=False))
    everyone = item_profile(inter["user_id"].unique())
    # Seeds' item distribution departs from the population's far more than a random group's does.
    assert np.abs(item_profile(seeds) - everyone).sum() > 2 * np.abs(item_profile(random_users) - everyone).sum()
