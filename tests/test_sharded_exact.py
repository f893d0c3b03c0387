"""The exact models on shards give the single-process results bit for bit: staged audiences (users and
scores) equal ``pipeline.score_campaign``'s, held-out evaluation rows equal ``protocol.evaluate_campaigns``'s
in both its full and its sampled branch, and no map round sends back anything the size of the population."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl
import pytest

import lookalike_models.catalog  # noqa: F401 (registers every scorer)
from lookalike_models.catalog import build_scorer
from lookalike_models.contract import read_dataset
from lookalike_models.dataset import LookalikeData, encode
from lookalike_models.evaluation import audience_size, audience_sizes, holdout_split
from lookalike_models.pipeline import score_campaign
from lookalike_models.protocol import evaluate_campaigns
from lookalike_models.sharded.scorer import SHARDED_SCORERS
from lookalike_models.sharded.scoring import evaluate_sharded, stage_sharded
from lookalike_models.sharded.shard_data import LocalShardPool, split_into_shards
from lookalike_models.synthetic import SyntheticConfig, write_synthetic

DATA = SyntheticConfig(n_users=20_000, n_items=1_500, n_campaigns=6, min_seeds=30, max_seeds=600, seed=21)
MODELS = {
    "popularity": ("popularity", {}),
    "random": ("random", {"seed": 3}),
    # strength None: the search runs, on a 3,000-user sample (a bounded panel, not the population).
    "item_ridge": ("item_ridge", {"max_items": 300, "max_validation_users": 3000}),
    "minhash": ("minhash", {}),
    "minhash_everyone": ("minhash", {"min_candidates": 20_001}),  # fewer LSH candidates than that: everyone scored
}
SAMPLED_MAX = 5000  # below the population: evaluate_campaigns' sampled branch


def arrays_in(value, depth: int = 0):
    """Every numpy array and polars series inside ``value`` (containers, dataclasses)."""
    if depth > 6:
        return
    if isinstance(value, np.ndarray | pl.Series):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from arrays_in(v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from arrays_in(v, depth + 1)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from arrays_in(getattr(value, f.name), depth + 1)


class CheckingPool(LocalShardPool):
    """A local pool that refuses any map result holding an array with a dimension of the population."""

    rounds: list[str]

    def map(self, fn, *args):
        results = super().map(fn, *args)
        for array in arrays_in(results):
            shape = array.shape if isinstance(array, np.ndarray) else (len(array),)
            assert self.n_users not in shape, f"{fn.__name__} returned an array of shape {shape}"
        self.rounds.append(fn.__name__)
        return results


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> LookalikeData:
    raw = read_dataset(write_synthetic(DATA, tmp_path_factory.mktemp("sharded_exact") / "dataset"))
    return encode(raw).without_campaign_leakage()


@pytest.fixture(scope="module")
def pool(data) -> CheckingPool:
    pool = CheckingPool(split_into_shards(data, 3))
    pool.rounds = []
    return pool


@pytest.fixture(scope="module")
def split(data):
    return holdout_split(data.campaigns, data.n_users, 0.1, seed=0)


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, data, pool, split):
    """(single-process scorer, sharded twin), both fitted on the training seeds."""
    name, params = MODELS[request.param]
    train, _ = split
    single = build_scorer(name, params)
    single.fit(data, train)
    sharded = SHARDED_SCORERS[name](params)
    sharded.fit(pool, train)
    return single, sharded


def assert_rows_equal(expected: list[dict], got: list[dict]) -> None:
    assert len(expected) == len(got) > 0
    for want, have in zip(expected, got):
        assert list(want) == list(have)
        for key in want:
            if key == "score_seconds":
                continue
            a, b = want[key], have[key]
            if isinstance(a, float) and math.isnan(a):
                assert isinstance(b, float) and math.isnan(b), (want["campaign_id"], key, a, b)
            else:
                assert a == b, (want["campaign_id"], key, a, b)


@pytest.mark.parametrize("max_scored_users", [None, SAMPLED_MAX], ids=["full", "sampled"])
def test_evaluation_rows_equal_the_single_process_ones(fitted, data, pool, split, max_scored_users):
    single, sharded = fitted
    train, heldout = split
    sizes = audience_sizes(data.n_users, [0.01, 0.05, 0.1])
    expected = evaluate_campaigns(single, data, train, heldout, sizes, [50, 200], max_scored_users)
    prepared = sharded.prepare(pool, train)
    got = evaluate_sharded(pool, sharded, prepared, train, heldout, sizes, [50, 200], max_scored_users)
    assert_rows_equal(expected, got)
    if max_scored_users:  # the sampled branch did run: fewer candidates than users
        assert all(row["n_candidates"] < data.n_users for row in got)


def test_staged_audiences_equal_the_single_process_ones(fitted, data, pool):
    single, sharded = fitted
    size = audience_size(data.n_users, 0.05)
    excluded = np.random.default_rng(4).choice(data.n_users, 300, replace=False)
    staged = stage_sharded(pool, sharded.prepare(pool, data.campaigns), sharded.name, data.campaigns, size, excluded)
    assert list(staged) == list(data.campaigns)
    for cid, seeds in data.campaigns.items():
        want = score_campaign(single, data, seeds, size, excluded)
        users, scores = staged[cid]
        assert users.size == size
        np.testing.assert_array_equal(users, want.users)
        assert scores.dtype == np.float32
        np.testing.assert_array_equal(scores, want.scores)  # the same bits, not merely close
    assert single.params() == sharded.params()


def test_minhash_scores_everyone_only_below_min_candidates_over_all_shards(data, pool, split):
    train, _ = split
    name, params = MODELS["minhash_everyone"]
    twin = SHARDED_SCORERS[name](params)
    twin.fit(pool, train)
    assert all(twin.prepare(pool, train).everyone.values())
    default = SHARDED_SCORERS["minhash"]({})
    assert not all(default.prepare(pool, train).everyone.values())


def test_every_kind_of_map_round_was_checked_for_population_sized_results(pool):
    # Runs last in the module: the pool has seen the rounds of every model and both entry points.
    expected = {"item_user_counts", "shard_gram", "seed_item_counts", "users_of_shard", "seed_signatures"}
    expected |= {"seed_signatures", "candidate_counts", "shard_heldout", "shard_tops"}
    assert expected <= set(pool.rounds)
