"""The write side of the sharded layout (``store.py`` describes the folder): rows routed to their shard's
Parquet files as they come, and the global vocabularies, ranges and items accumulated along the way, so a
writer holds one batch plus small per-shard state. Used by ``convert.py`` and ``synthetic_shards.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from lookalike_models.contract import (
    CAMPAIGN_FEATURES,
    INTERACTIONS,
    ITEM_ID,
    SCHEMA,
    SEEDS,
    USER_FEATURES,
    USER_ID,
    DataContractError,
    FeatureSchema,
)
from lookalike_models.sharded.store import FORMAT, ITEMS, MANIFEST, Manifest, ShardCounts, shard_folder, shard_of


class ShardedWriter:
    """Writes one sharded folder (``folder`` is usually an ``atomic_directory``'s temporary folder).

    ``add_interactions`` takes validated interactions (user_id, item_id, [ts], weight float32, domain);
    ``add_user_features`` takes validated user features; ``finish`` writes the global files and the manifest.
    """

    def __init__(self, folder: Path, n_shards: int, schema: FeatureSchema, max_multi_len: int = 50):
        if n_shards < 1:
            raise ValueError(f"n_shards must be >= 1, got {n_shards}")
        self.folder, self.n_shards, self.schema, self.max_multi_len = Path(folder), n_shards, schema, max_multi_len
        self.writers: dict[tuple[str, int], pq.ParquetWriter] = {}
        self.arrow_schemas: dict[str, object] = {}
        self.interaction_counts = np.zeros(n_shards, np.int64)
        self.item_ids: pl.Series | None = None
        self.domains: set[str] = set()
        self.user_id_dtype: pl.DataType | None = None
        self.has_ts: bool | None = None
        self.has_user_features = False
        self.single_vocab: dict[str, set[str]] = {name: set() for name in schema.user_single}
        self.multi_vocab: dict[str, set[str]] = {name: set() for name in schema.user_multi}
        self.multi_width: dict[str, int] = {name: 1 for name in schema.user_multi}
        self.ranges: dict[str, list[float | None]] = {name: [None, None] for name in schema.user_continuous}
        for index in range(n_shards):
            shard_folder(self.folder, index).mkdir(parents=True)

    def _check_user_ids(self, frame: pl.DataFrame, file: str) -> None:
        dtype = frame.schema[USER_ID]
        dtype = pl.String if dtype == pl.String else pl.Int64  # integer widths may differ between files
        if self.user_id_dtype is None:
            self.user_id_dtype = dtype
        elif dtype != self.user_id_dtype:
            raise DataContractError(
                file,
                USER_ID,
                f"id type {frame.schema[USER_ID]} differs from {self.user_id_dtype} elsewhere",
                frame[USER_ID][0],
            )

    def _route(self, frame: pl.DataFrame, file: str) -> None:
        """Append ``frame``'s rows to their shards' ``file`` (one Parquet row group per shard and call)."""
        frame = frame.with_columns(pl.col(USER_ID).cast(self.user_id_dtype))
        shards = shard_of(frame[USER_ID], self.n_shards)
        for (index,), part in frame.with_columns(_shard=shards).partition_by("_shard", as_dict=True).items():
            table = part.drop("_shard").to_arrow()
            key = (file, int(index))
            if key not in self.writers:
                self.arrow_schemas.setdefault(file, table.schema)
                self.writers[key] = pq.ParquetWriter(shard_folder(self.folder, index) / file, table.schema)
            self.writers[key].write_table(table.cast(self.arrow_schemas[file]))
            if file == INTERACTIONS:
                self.interaction_counts[index] += part.height

    def add_interactions(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        self._check_user_ids(frame, INTERACTIONS)
        has_ts = "ts" in frame.columns
        if self.has_ts is not None and has_ts != self.has_ts:
            raise DataContractError(INTERACTIONS, "ts", "present in some rows' batches and not in others")
        self.has_ts = has_ts
        columns = [USER_ID, ITEM_ID, *(["ts"] if has_ts else []), "weight", "domain"]
        batch_items = frame[ITEM_ID].unique()
        if self.item_ids is not None and batch_items.dtype != self.item_ids.dtype:
            raise DataContractError(
                INTERACTIONS, ITEM_ID, f"id type {batch_items.dtype} differs between batches", batch_items[0]
            )
        self.item_ids = batch_items if self.item_ids is None else pl.concat([self.item_ids, batch_items]).unique()
        self.domains.update(frame["domain"].unique().to_list())
        self._route(frame.select(columns), INTERACTIONS)

    def add_user_features(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        self.has_user_features = True
        self._check_user_ids(frame, USER_FEATURES)
        schema = self.schema
        # Vocabularies as encode_categorical / encode_multi build them: non-null values cast to strings.
        for name in schema.user_single:
            self.single_vocab[name].update(frame[name].cast(pl.String).drop_nulls().unique().to_list())
        for name in schema.user_multi:
            values = frame[name].explode().drop_nulls().cast(pl.String).unique()
            self.multi_vocab[name].update(values.to_list())
            longest = frame[name].list.drop_nulls().list.len().max()
            self.multi_width[name] = max(self.multi_width[name], min(self.max_multi_len, int(longest or 0)))
        for name in schema.user_continuous:
            column = frame[name].cast(pl.Float64)
            lo, hi = self.ranges[name]
            batch_lo, batch_hi = column.min(), column.max()
            self.ranges[name] = [_combine(lo, batch_lo, min), _combine(hi, batch_hi, max)]
        columns = [USER_ID, *schema.user_single, *schema.user_multi, *schema.user_continuous]
        self._route(frame.select(columns), USER_FEATURES)

    def finish(self, seeds: pl.DataFrame, campaign_features: pl.DataFrame | None) -> Manifest:
        """Close the shard files (an empty file with the schema where a shard got no rows), write the global
        files, count each shard's users and write the manifest."""
        if self.item_ids is None:
            raise DataContractError(INTERACTIONS, "(rows)", "no interactions")
        for writer in self.writers.values():
            writer.close()
        files = [INTERACTIONS] + ([USER_FEATURES] if self.has_user_features else [])
        for file in files:
            for index in range(self.n_shards):
                if (file, index) not in self.writers:
                    pq.write_table(self.arrow_schemas[file].empty_table(), shard_folder(self.folder, index) / file)
        if seeds.schema[USER_ID] != self.user_id_dtype and not (
            seeds.schema[USER_ID].is_integer() and self.user_id_dtype == pl.Int64
        ):
            raise DataContractError(
                SEEDS,
                USER_ID,
                f"id type {seeds.schema[USER_ID]} differs from interactions' {self.user_id_dtype}",
                seeds[USER_ID][0],
            )
        pl.DataFrame({ITEM_ID: self.item_ids.sort()}).write_parquet(self.folder / ITEMS)
        seeds.with_columns(pl.col(USER_ID).cast(self.user_id_dtype)).write_parquet(self.folder / SEEDS)
        if campaign_features is not None:
            campaign_features.write_parquet(self.folder / CAMPAIGN_FEATURES)
        self.schema.to_yaml(self.folder / SCHEMA)
        manifest = Manifest(
            format=FORMAT,
            n_shards=self.n_shards,
            shards=[
                ShardCounts(users=self._count_users(i), interactions=int(n))
                for i, n in enumerate(self.interaction_counts)
            ],
            user_id_dtype=str(self.user_id_dtype),
            has_ts=bool(self.has_ts),
            has_user_features=self.has_user_features,
            domains=sorted(self.domains),
            max_multi_len=self.max_multi_len,
            single_vocab={name: sorted(values) for name, values in self.single_vocab.items()},
            multi_vocab={name: sorted(values) for name, values in self.multi_vocab.items()},
            multi_width=self.multi_width,
            continuous_range=self.ranges,
        )
        (self.folder / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=1))
        return manifest

    def _count_users(self, index: int) -> int:
        """Distinct users of one shard (interactions or features), read back one shard at a time."""
        folder = shard_folder(self.folder, index)
        files = [INTERACTIONS] + ([USER_FEATURES] if self.has_user_features else [])
        ids = pl.concat([pl.read_parquet(folder / file, columns=[USER_ID])[USER_ID] for file in files])
        return ids.n_unique()


def _combine(current: float | None, new: float | None, pick) -> float | None:
    if new is None:
        return current
    return new if current is None else pick(current, new)
