"""The sharded folder (lookalike_models/sharded/store.py): written by the converter and the shard-by-shard
generator, read whole it equals the single-process encoding, read by shard it equals the whole's ranges."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lookalike_models.config import DataSource
from lookalike_models.contract import DataContractError, read_dataset
from lookalike_models.dataset import LookalikeData, encode
from lookalike_models.sharded.convert import convert_to_shards
from lookalike_models.sharded.shard_data import subset_users
from lookalike_models.sharded.store import (
    load_campaigns,
    load_shard,
    load_whole,
    read_manifest,
    shard_of,
    user_offsets,
)
from lookalike_models.sharded.synthetic_shards import write_synthetic_shards
from lookalike_models.synthetic import SyntheticConfig, write_synthetic

SMALL = SyntheticConfig(n_users=1500, n_items=200, n_campaigns=6, min_seeds=20, max_seeds=80)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("store")
    contract = write_synthetic(SMALL, root / "contract")
    # Campaign c000's own item is item 1: its interactions are leakage the shard reader must remove.
    campaigns = pl.read_parquet(contract / "campaign_features.parquet").with_columns(
        pl.when(pl.col("campaign_id") == "c000").then(1).otherwise(None).alias("item_id")
    )
    campaigns.write_parquet(contract / "campaign_features.parquet")
    # A campaign of unknown users: a problem both readers must report alike.
    seeds = pl.read_parquet(contract / "seeds.parquet")
    bad = pl.DataFrame({"campaign_id": "zz", "user_id": [1, 2, 3], "label": [1, 1, 1]}).cast(seeds.schema)
    pl.concat([seeds, bad]).write_parquet(contract / "seeds.parquet")
    # A batch size that splits every table into several batches, and more shards than fit evenly.
    return contract, convert_to_shards(contract, root / "sharded", 5, batch_rows=997)


def per_user(data: LookalikeData) -> dict:
    """Everything of each user, keyed by user id, independent of the user and interaction order."""
    ids = data.user_ids.to_list()
    frame = pl.DataFrame(
        {
            "u": data.user_ids.gather(data.user_idx),
            "i": data.item_ids.gather(data.item_idx),
            "w": data.weight,
            "t": data.ts,
            "d": data.domain,
        }
    ).sort("u", "i", "t", "d")
    rows = {u: [] for u in ids}
    for row in frame.iter_rows():
        rows[row[0]].append(row[1:])
    fields = data.users
    return {
        u: (
            rows[u],
            fields.single[k].tolist(),
            [m[k].tolist() for m in fields.multi],
            fields.continuous[k].tolist(),
        )
        for k, u in enumerate(ids)
    }


def campaigns_by_id(data: LookalikeData) -> dict:
    return {
        cid: (sorted(data.user_ids.gather(s.positives).to_list()), sorted(data.user_ids.gather(s.negatives).to_list()))
        for cid, s in data.campaigns.items()
    }


def test_shard_hash_is_stable_and_routes_every_row(converted):
    # Pinned values: a change of the hash would move every user of every stored folder to another shard.
    assert (
        shard_of(pl.Series([1_000_000, 1_000_001, -5]), 40).tolist()
        == shard_of(pl.Series([1_000_000, 1_000_001, -5], dtype=pl.Int32), 40).tolist()
    )
    assert shard_of(pl.Series([1_000_000, 1_000_001, 42]), 40).tolist() == [19, 9, 20]  # pure-Python fmix64
    assert shard_of(pl.Series(["alice", "bob", "", "żółw"]), 40).tolist() == [
        36,
        32,
        22,
        31,
    ]  # pure-Python fnv1a64 + fmix64
    strings = shard_of(pl.Series([f"user-{k}" for k in range(4000)]), 8)
    assert np.bincount(strings, minlength=8).min() > 400  # spread, not piled on one shard
    _, folder = converted
    for index in range(5):
        ids = pl.read_parquet(folder / "shards" / f"part-{index:05d}" / "interactions.parquet")["user_id"]
        assert set(shard_of(ids, 5).tolist()) == {index}


def test_whole_equals_single_process_encode(converted):
    contract, folder = converted
    whole, reference = load_whole(folder), encode(read_dataset(contract))
    assert whole.n_users == reference.n_users and whole.user_idx.size == reference.user_idx.size
    assert whole.item_ids.to_list() == reference.item_ids.to_list()
    assert whole.domains == reference.domains
    assert whole.users.single_sizes == reference.users.single_sizes
    assert whole.users.multi_sizes == reference.users.multi_sizes
    assert per_user(whole) == per_user(reference)
    assert campaigns_by_id(whole) == campaigns_by_id(reference)
    assert whole.campaign_problems == reference.campaign_problems and "zz" in whole.campaign_problems
    assert whole.campaign_items == reference.campaign_items == {"c000": 0}
    assert {c: v.tolist() for c, v in whole.campaign_fields.items()} == {
        c: v.tolist() for c, v in reference.campaign_fields.items()
    }
    # Shard-major order: each shard's users sorted by id, shard after shard.
    offsets = user_offsets(folder)
    assert offsets[-1] == whole.n_users
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        block = whole.user_ids[int(lo) : int(hi)]
        assert block.is_sorted() and len(set(shard_of(block, 5).tolist())) <= 1


def test_each_shard_is_its_range_of_the_whole_without_leakage(converted):
    _, folder = converted
    whole = load_whole(folder).without_campaign_leakage()
    offsets = user_offsets(folder)
    assert whole.user_idx.size < load_whole(folder).user_idx.size  # c000's item was removed
    for index in range(5):
        shard = load_shard(folder, index)
        assert shard.offset == offsets[index] and shard.stop == offsets[index + 1]
        expected = subset_users(whole, np.arange(shard.offset, shard.stop))
        assert per_user(shard.data) == per_user(expected)
        assert shard.data.item_ids.to_list() == whole.item_ids.to_list() and shard.data.campaigns == {}
        assert shard.data.campaign_items == {"c000": 0}
        assert 0 not in shard.data.item_idx


def test_campaigns_read_from_user_ids_alone(converted):
    _, folder = converted
    whole = load_whole(folder)
    campaigns, problems = load_campaigns(folder, 0.5)
    assert campaigns.keys() == whole.campaigns.keys() and problems == whole.campaign_problems
    # "Every user is a seed" still compares against the whole population, not the seeds found.
    tiny_contract = write_synthetic(
        SyntheticConfig(n_users=100, n_items=60, n_campaigns=1, min_seeds=2, max_seeds=3), folder.parent / "tiny"
    )
    everyone = pl.read_parquet(tiny_contract / "interactions.parquet").select(pl.col("user_id").unique())
    everyone.with_columns(campaign_id=pl.lit("all"), label=pl.lit(1, pl.Int8)).write_parquet(
        tiny_contract / "seeds.parquet"
    )
    tiny = convert_to_shards(tiny_contract, folder.parent / "tiny-sharded", 3)
    assert "nothing is left to rank" in load_campaigns(tiny)[1]["all"]


def test_convert_validates_and_replaces_atomically(converted, tmp_path):
    contract, _ = converted
    out = convert_to_shards(contract, tmp_path / "out", 2)
    (out / "stale.txt").write_text("from an earlier run")
    convert_to_shards(contract, out, 3)
    assert read_manifest(out).n_shards == 3 and not (out / "stale.txt").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("seeds.parquet", "schema.yaml"):
        (broken / name).write_bytes((contract / name).read_bytes())
    pl.read_parquet(contract / "interactions.parquet").drop("item_id").write_parquet(broken / "interactions.parquet")
    with pytest.raises(DataContractError, match="interactions.parquet: column 'item_id'"):
        convert_to_shards(broken, tmp_path / "never", 2)
    assert not (tmp_path / "never").exists()
    with pytest.raises(DataContractError, match="manifest.json"):
        read_manifest(contract)


def test_generated_shards_carry_the_planted_signal(tmp_path):
    from lookalike_models.protocol import evaluate_scorers

    folder = write_synthetic_shards(SyntheticConfig(n_users=20_000, n_campaigns=10), 8, tmp_path / "gen")
    manifest = read_manifest(folder)
    data = load_whole(folder)
    assert data.n_users == 20_000 == sum(s.users for s in manifest.shards)
    assert data.user_idx.size == sum(s.interactions for s in manifest.shards)
    assert len(data.campaigns) == 10 and not data.campaign_problems
    for index in range(8):  # every user in the shard its hash names
        assert set(shard_of(load_shard(folder, index).data.user_ids, 8).tolist()) == {index}
    results = evaluate_scorers(data.without_campaign_leakage(), {"popularity": {}, "item_ridge": {}})
    recall = dict(results.group_by("model").agg(pl.col("recall_at_5pct").mean()).iter_rows())
    assert recall["item_ridge"] > 2 * recall["popularity"], recall
    # Deterministic: the same knobs write the same data.
    again = load_whole(write_synthetic_shards(SyntheticConfig(n_users=20_000, n_campaigns=10), 8, tmp_path / "again"))
    assert again.content_key == data.content_key


def test_sharded_source_loads_end_to_end(converted, tmp_path):
    from lookalike_models.sources import data_set_key, load_encoded

    contract, folder = converted
    data = load_encoded(DataSource(kind="sharded", path=str(folder)), tmp_path)
    reference = load_encoded(DataSource(kind="folder", path=str(contract)), tmp_path)
    assert per_user(data) == per_user(reference)
    assert data_set_key(DataSource(kind="sharded", path=str(folder))) == f"sharded:{folder.resolve()}"
    with pytest.raises(DataContractError, match="nowhere"):
        load_encoded(DataSource(kind="sharded", path=str(tmp_path / "nowhere")), tmp_path)
    with pytest.raises(ValueError, match="needs data.path"):
        DataSource(kind="sharded")
    with pytest.raises(ValueError, match="shape cannot be used with data.kind=sharded"):
        DataSource(kind="sharded", path=str(folder), shape={"max_users": 10})


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_command_lines(converted, tmp_path):
    contract, _ = converted
    done = run_module(
        "lookalike_models.sharded.convert", "--from", str(contract), "--to", str(tmp_path / "c"), "--shards", "2"
    )
    assert done.returncode == 0, done.stderr
    assert read_manifest(tmp_path / "c").n_shards == 2
    done = run_module(
        "lookalike_models.sharded.synthetic_shards",
        "--users",
        "300",
        "--campaigns",
        "2",
        "--shards",
        "3",
        "--out",
        str(tmp_path / "s"),
    )
    assert done.returncode == 0, done.stderr
    assert sum(s.users for s in read_manifest(tmp_path / "s").shards) == 300
    bad = run_module(
        "lookalike_models.sharded.convert",
        "--from",
        str(tmp_path / "none"),
        "--to",
        str(tmp_path / "x"),
        "--shards",
        "2",
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "none" in bad.stderr


def test_the_readme_sharding_commands_run_as_written(converted, tmp_path):
    """The README's `python -m lookalike_models.sharded...` lines, their folders moved under tmp_path and the
    generator's population made small."""
    import re
    import shlex

    contract, _ = converted
    text = (ROOT / "README.md").read_text()
    lines = re.findall(r"^\.venv/bin/python -m (lookalike_models\.sharded\.\S+) (.*)$", text, re.M)
    assert {module for module, _ in lines} == {
        "lookalike_models.sharded.convert",
        "lookalike_models.sharded.synthetic_shards",
    }
    for module, args in lines:
        words = shlex.split(args)
        for flag, value in (
            ("--from", str(contract)),
            ("--to", str(tmp_path / "to")),
            ("--out", str(tmp_path / "out")),
        ):
            if flag in words:
                words[words.index(flag) + 1] = value
        if "--users" in words:
            words[words.index("--users") + 1] = "500"
        done = run_module(module, *words)
        assert done.returncode == 0, done.stderr
    assert read_manifest(tmp_path / "to").n_shards == 16 and read_manifest(tmp_path / "out").n_shards == 8


def test_generated_shards_with_campaigns_absent_from_some_shards(tmp_path):
    """More shards than a campaign has seeds: its seed rows in most shards are empty, which must not change
    the seeds table's column types."""
    from lookalike_models.sharded.synthetic_shards import write_synthetic_shards

    cfg = SyntheticConfig(n_users=2000, n_items=200, n_campaigns=3, min_seeds=2, max_seeds=4)
    folder = write_synthetic_shards(cfg, 40, tmp_path / "s")
    seeds = pl.read_parquet(folder / "seeds.parquet")
    assert seeds.schema["campaign_id"] == pl.String and seeds.height > 0


def test_a_sharded_night_naming_a_model_without_a_sharded_twin_is_refused_when_read(converted, tmp_path, capsys):
    """Refused at parse time with one line and exit 2, not after the other models were fitted."""
    import yaml

    from flows import cli

    folder = converted[1]
    config = {
        "data": {"kind": "sharded", "path": str(folder)},
        "execution": {"backend": "dask", "dask_address": "tcp://127.0.0.1:8786"},
        "models": [{"name": "item_ridge", "model": "item_ridge"}, {"name": "lsh", "model": "lsh_density"}],
    }
    (tmp_path / "night.yaml").write_text(yaml.safe_dump(config))
    code = cli.main(["nightly", "--config", str(tmp_path / "night.yaml"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "['lsh_density'] cannot run on the sharded data plane" in err, err
    assert len(err.strip().splitlines()) <= 2, err
    config["execution"]["backend"] = "local"  # read whole, in one process: every model runs
    (tmp_path / "night.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["nightly", "--config", str(tmp_path / "night.yaml"), "--dry-run"]) == 0


def test_panel_users_is_set_from_a_sharded_nights_config_and_refused_elsewhere(converted, tmp_path, capsys):
    """The sampled models' panel size is a key of their sharded twins only: a sharded night passes it to them; a
    night in one process refuses it in one line (exit 2) rather than ignoring it; a misspelt key is refused."""
    import yaml

    from flows import cli
    from lookalike_models.config import NightlyConfig
    from lookalike_models.sharded.catalog import sharded_scorer

    config = {
        "data": {"kind": "sharded", "path": str(converted[1])},
        "execution": {"backend": "dask", "dask_address": "tcp://127.0.0.1:8786"},
        "models": [
            {"name": "svd", "model": "svd_centroid", "params": {"panel_users": 5000}},
            {"name": "ens", "model": "pinterest_ensemble", "params": {"panel_users": 7000}},
        ],
        "evaluation": {"reference": "svd"},
    }
    night = NightlyConfig.model_validate(config)
    built = {spec.name: sharded_scorer(spec.model)(spec.params) for spec in night.models}
    assert built["svd"].config.panel_users == 5000 and built["ens"].config.panel_users == 7000

    config["execution"]["backend"] = "local"
    (tmp_path / "night.yaml").write_text(yaml.safe_dump(config))
    code = cli.main(["nightly", "--config", str(tmp_path / "night.yaml"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "models.0.params: panel_users applies only on the sharded data plane" in err, err
    assert len(err.strip().splitlines()) <= 2, err

    config["execution"]["backend"] = "dask"
    config["models"][0]["params"] = {"panel_user": 5000}
    (tmp_path / "night.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["nightly", "--config", str(tmp_path / "night.yaml"), "--dry-run"]) == 2
    assert "panel_user" in capsys.readouterr().err
