"""The on-disk sharded layout and its reader: users hash-partitioned into Parquet shards, small global files.

A sharded folder::

    manifest.json        {format: "lookalike-sharded/1", n_shards, shards: [{users, interactions}],
                          user_id_dtype, has_ts, has_user_features, domains (sorted), max_multi_len,
                          single_vocab / multi_vocab: field -> sorted distinct values as strings,
                          multi_width: field -> the global padded width, continuous_range: field -> [min, max]}
    items.parquet        item_id, sorted: position = the global item index
    seeds.parquet        the contract's seeds (validated: label 0/1, campaign_id a string)
    campaign_features.parquet   (optional) as in the contract
    schema.yaml          the contract's FeatureSchema
    shards/part-00000/interactions.parquet   user_id, item_id, [ts], weight (float32), domain
    shards/part-00000/user_features.parquet  (when the data has user features) user_id + schema fields

A user's rows lie in shard ``shard_of(user_id, n_shards)``. Global user index: shard-major, each shard's
users (from either file) sorted by id. The vocabularies and ranges are global, so a shard encoded alone has
the codes and scaling ``dataset.encode`` gives the same user on the whole data, and the shards read in order
and concatenated (``load_whole``) equal ``encode(read_dataset(contract folder))`` up to the user order.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import ValidationError, model_validator

from lookalike_models.contract import (
    CAMPAIGN_FEATURES,
    CAMPAIGN_ID,
    INTERACTIONS,
    ITEM_ID,
    SCHEMA,
    SEEDS,
    USER_FEATURES,
    USER_ID,
    DataContractError,
    FeatureSchema,
    read_table,
)
from lookalike_models.dataset import CampaignSeeds, LookalikeData, UserFields
from lookalike_models.dataset_encoding import encode_categorical, seed_list_problems
from lookalike_models.sharded.shard_data import LazyShardData, ShardData, concat_data
from lookalike_models.strict_config import StrictConfig

FORMAT = "lookalike-sharded/1"
MANIFEST, ITEMS = "manifest.json", "items.parquet"

# splitmix64 / murmur3 fmix64 constants, and 64-bit FNV-1a for strings: fixed here, so a user's shard is the
# same on every machine and version (polars' own hash may change between versions, its docs say).
_FMIX1, _FMIX2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


class ShardCounts(StrictConfig):
    users: int
    interactions: int


class Manifest(StrictConfig):
    format: Literal["lookalike-sharded/1"]
    n_shards: int
    shards: list[ShardCounts]
    user_id_dtype: Literal["Int64", "String"]
    has_ts: bool
    has_user_features: bool
    domains: list[str]
    max_multi_len: int
    single_vocab: dict[str, list[str]]
    multi_vocab: dict[str, list[str]]
    multi_width: dict[str, int]
    continuous_range: dict[str, list[float | None]]

    @model_validator(mode="after")
    def _one_count_per_shard(self) -> Manifest:
        if len(self.shards) != self.n_shards:
            raise ValueError(f"n_shards is {self.n_shards} but {len(self.shards)} shards are listed")
        return self


def _fmix64(keys: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finalizer: every input bit moves every output bit (uint64 arithmetic wraps)."""
    k = keys.astype(np.uint64, copy=True)
    k ^= k >> np.uint64(33)
    k *= _FMIX1
    k ^= k >> np.uint64(33)
    k *= _FMIX2
    k ^= k >> np.uint64(33)
    return k


def _fnv1a_strings(values: pl.Series) -> np.ndarray:
    """64-bit FNV-1a of each string's UTF-8 bytes, vectorised over the strings (one pass per byte position)."""
    arrow = values.cast(pl.String).rechunk().to_arrow(compat_level=pl.CompatLevel.oldest())  # large_string
    _, offsets_buf, data_buf = arrow.buffers()
    start = arrow.offset
    offsets = np.frombuffer(offsets_buf, np.int64)[start : start + len(arrow) + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    hashes = np.full(len(arrow), _FNV_OFFSET, np.uint64)
    for position in range(int(lengths.max()) if lengths.size else 0):
        live = np.flatnonzero(lengths > position)
        hashes[live] = (hashes[live] ^ data[offsets[live] + position].astype(np.uint64)) * _FNV_PRIME
    return hashes


def shard_of(user_ids: pl.Series, n_shards: int) -> np.ndarray:
    """The shard (int64 in [0, n_shards)) of each user id: ``fmix64(id) % n_shards`` for integer ids (as
    int64, so any integer width agrees), ``fmix64(fnv1a64(utf-8 bytes)) % n_shards`` for strings. Stable:
    defined here, independent of polars' hash."""
    if user_ids.dtype == pl.String:
        keys = _fnv1a_strings(user_ids)
    elif user_ids.dtype.is_integer():
        keys = user_ids.cast(pl.Int64).to_numpy().view(np.uint64)
    else:
        raise DataContractError(INTERACTIONS, USER_ID, f"ids must be integers or strings, got {user_ids.dtype}")
    return (_fmix64(keys) % np.uint64(n_shards)).astype(np.int64)


def shard_folder(folder: str | Path, index: int) -> Path:
    return Path(folder) / "shards" / f"part-{index:05d}"


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise DataContractError(path, "(file)", "not a sharded data folder: manifest.json not found")
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataContractError(path, "(manifest)", f"not a valid {FORMAT} manifest ({problem})") from None


def user_offsets(folder: str | Path, manifest: Manifest | None = None) -> np.ndarray:
    """Global user index of each shard's first user, and the total last: int64 [n_shards + 1]."""
    manifest = manifest or read_manifest(folder)
    return np.concatenate([[0], np.cumsum([s.users for s in manifest.shards])]).astype(np.int64)


def _shard_user_ids(folder: Path, index: int, manifest: Manifest) -> pl.Series:
    """The shard's users (either file), sorted: position = local user index."""
    files = [INTERACTIONS] + ([USER_FEATURES] if manifest.has_user_features else [])
    ids = [read_table(shard_folder(folder, index) / file).select(USER_ID)[USER_ID] for file in files]
    return pl.concat(ids).unique().sort()


def _codes(values: pl.Series, vocab: list[str]) -> np.ndarray:
    """``encode_categorical``'s codes against the global vocabulary: 1..V by sorted value, null -> 0."""
    mapping = pl.DataFrame(
        {"v": vocab, "code": np.arange(1, len(vocab) + 1, dtype=np.int64)}, schema_overrides={"v": pl.String}
    )
    joined = pl.DataFrame({"v": values.cast(pl.String)}).join(mapping, on="v", how="left", maintain_order="left")
    return joined["code"].fill_null(0).to_numpy().astype(np.int64)


def _multi_codes(values: pl.Series, vocab: list[str], width: int) -> np.ndarray:
    """``encode_multi``'s padded codes against the global vocabulary and width."""
    n = len(values)
    mapping = pl.DataFrame(
        {"v": vocab, "code": np.arange(1, len(vocab) + 1, dtype=np.int64)}, schema_overrides={"v": pl.String}
    )
    exploded = pl.DataFrame({"row": np.arange(n), "v": values}).explode("v").drop_nulls("v")
    exploded = (
        exploded.with_columns(pl.col("v").cast(pl.String))
        .join(mapping, on="v", how="left", maintain_order="left")
        .with_columns(pl.int_range(pl.len()).over("row").alias("pos"))
        .filter(pl.col("pos") < width)
    )
    out = np.zeros((n, width), np.int64)
    out[exploded["row"].to_numpy(), exploded["pos"].to_numpy()] = exploded["code"].to_numpy()
    return out


def _user_fields(
    folder: Path, index: int, users: pl.DataFrame, manifest: Manifest, schema: FeatureSchema
) -> UserFields:
    n = users.height
    continuous = np.zeros((n, len(schema.user_continuous)), np.float32)
    single, multi = np.zeros((n, 0), np.int64), []
    single_sizes, multi_sizes = [], []
    if manifest.has_user_features:
        features = read_table(shard_folder(folder, index) / USER_FEATURES)
        aligned = users.join(features, on=USER_ID, how="left", maintain_order="left")
        if schema.user_single:
            single = np.stack([_codes(aligned[f], manifest.single_vocab[f]) for f in schema.user_single], 1)
        single_sizes = [len(manifest.single_vocab[f]) + 1 for f in schema.user_single]
        multi = [_multi_codes(aligned[f], manifest.multi_vocab[f], manifest.multi_width[f]) for f in schema.user_multi]
        multi_sizes = [len(manifest.multi_vocab[f]) + 1 for f in schema.user_multi]
        for j, name in enumerate(schema.user_continuous):
            col = aligned[name].cast(pl.Float64)
            lo, hi = manifest.continuous_range[name]
            scaled = (col - lo) / (hi - lo) if hi is not None and hi > lo else col * 0
            continuous[:, j] = scaled.fill_null(0.0).fill_nan(0.0).to_numpy()
    return UserFields(
        schema.user_single,
        schema.user_multi,
        schema.user_continuous,
        single,
        single_sizes,
        multi,
        multi_sizes,
        continuous,
    )


def _campaign_fields(folder: Path, schema: FeatureSchema, items: pl.DataFrame) -> tuple[dict, list[int], dict]:
    """(campaign fields, their sizes, campaign -> item_idx of its own item), as ``dataset.encode``."""
    path = folder / CAMPAIGN_FEATURES
    if not path.exists():
        return {}, [], {}
    features = read_table(path)
    campaign_items, fields, sizes = {}, {}, []
    if ITEM_ID in features.columns:
        own = features.select(CAMPAIGN_ID, ITEM_ID).join(items, on=ITEM_ID)
        campaign_items = dict(zip(own[CAMPAIGN_ID].to_list(), own["item_idx"].to_list()))
    if schema.campaign_single:
        codes = [encode_categorical(features[name]) for name in schema.campaign_single]
        sizes = [size for _, size in codes]
        matrix = np.stack([c for c, _ in codes], 1)
        fields = {cid: matrix[i] for i, cid in enumerate(features[CAMPAIGN_ID].to_list())}
    return fields, sizes, campaign_items


def load_shard(folder: str | Path, index: int, offset: int | None = None, leakage_free: bool = True) -> ShardData:
    """Shard ``index`` encoded against the global items, vocabularies and ranges; no campaigns. ``offset``:
    its first user's global index (default: from the manifest). ``leakage_free``: without the campaigns'
    own items, as every model sees the data."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not 0 <= index < manifest.n_shards:
        raise IndexError(f"{folder}: shard {index} of {manifest.n_shards}")
    offset = int(user_offsets(folder, manifest)[index]) if offset is None else offset
    schema = FeatureSchema.from_yaml(folder / SCHEMA)
    users = pl.DataFrame({USER_ID: _shard_user_ids(folder, index, manifest)}).with_row_index("user_idx")
    items = read_table(folder / ITEMS).with_row_index("item_idx")
    encoded = (
        read_table(shard_folder(folder, index) / INTERACTIONS)
        .join(users, on=USER_ID)
        .join(items, on=ITEM_ID)
        .with_columns(pl.col("domain").replace_strict(manifest.domains, list(range(len(manifest.domains)))).alias("d"))
    )
    campaign_fields, field_sizes, campaign_items = _campaign_fields(folder, schema, items)
    data = LookalikeData(
        user_ids=users[USER_ID],
        item_ids=items[ITEM_ID],
        user_idx=encoded["user_idx"].to_numpy().astype(np.int32),
        item_idx=encoded["item_idx"].to_numpy().astype(np.int32),
        weight=encoded["weight"].to_numpy().astype(np.float32),
        domain=encoded["d"].to_numpy().astype(np.int8),
        domains=list(manifest.domains),
        users=_user_fields(folder, index, users, manifest, schema),
        campaigns={},
        campaign_fields=campaign_fields,
        campaign_field_names=schema.campaign_single,
        campaign_field_sizes=field_sizes,
        campaign_items=campaign_items,
        ts=encoded["ts"].cast(pl.Int64).to_numpy() if manifest.has_ts else None,
    )
    return ShardData(index, offset, data.without_campaign_leakage() if leakage_free else data)


def open_shard(folder: str | Path, index: int, offsets: np.ndarray, spill: Path | None = None) -> LazyShardData:
    """Shard ``index`` as ``load_shard`` gives it, its rows read on first use (``offsets``: ``user_offsets``)."""
    offset, n_users = int(offsets[index]), int(offsets[index + 1] - offsets[index])
    return LazyShardData(index, offset, n_users, partial(_shard_rows, folder, index, offset), spill)


def _shard_rows(folder: str | Path, index: int, offset: int) -> LookalikeData:
    return load_shard(folder, index, offset).data


class _KnownSeedUsers:
    """What ``seed_list_problems`` reads of the user index: the seed ids that are known users (``select``)
    and the population's size (``height``), without holding every user id."""

    def __init__(self, known: pl.DataFrame, n_users: int):
        self.known, self.height = known, n_users

    def select(self, *columns):
        return self.known.select(*columns)


def load_campaigns(
    folder: str | Path, min_seed_match_rate: float = 0.5
) -> tuple[dict[str, CampaignSeeds], dict[str, str]]:
    """Every campaign's seed list in global user indices, and the campaigns that cannot run (and why), as
    ``dataset.encode`` finds them. Reads one shard's user ids at a time, never an interaction's other fields."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    offsets = user_offsets(folder, manifest)
    seeds = read_table(folder / SEEDS)
    wanted = seeds.select(pl.col(USER_ID).unique())
    known = []
    for index in range(manifest.n_shards):
        ids = pl.DataFrame({USER_ID: _shard_user_ids(folder, index, manifest)}).with_row_index("user_idx")
        ids = ids.with_columns(pl.col("user_idx").cast(pl.Int64) + int(offsets[index]))
        known.append(ids.join(wanted, on=USER_ID, how="semi"))
    known_index = pl.concat(known).select(USER_ID, "user_idx")
    problems = seed_list_problems(seeds, _KnownSeedUsers(known_index, int(offsets[-1])), min_seed_match_rate)
    campaigns = {}
    for (cid,), group in seeds.join(known_index, on=USER_ID).group_by([CAMPAIGN_ID], maintain_order=True):
        if cid in problems:
            continue
        labels, idx = group["label"].to_numpy(), group["user_idx"].to_numpy().astype(np.int64)
        campaigns[cid] = CampaignSeeds(cid, np.sort(idx[labels == 1]), np.sort(idx[labels == 0]))
    return campaigns, problems


def load_whole(folder: str | Path, min_seed_match_rate: float = 0.5) -> LookalikeData:
    """Every shard in order, with the campaigns and their problems: what the single-process night reads
    (the campaigns' own items still in the interactions, like ``sources.encode_source``)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    offsets = user_offsets(folder, manifest)
    parts = [load_shard(folder, i, int(offsets[i]), leakage_free=False).data for i in range(manifest.n_shards)]
    campaigns, problems = load_campaigns(folder, min_seed_match_rate)
    return replace(concat_data(parts), campaigns=campaigns, campaign_problems=problems)
