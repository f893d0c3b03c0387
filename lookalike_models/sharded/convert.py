"""A contract folder (``contract.py``) converted to a sharded folder (``store.py``), streaming: interactions and
user features are read in batches of ``batch_rows`` and each batch's rows appended to their shards' files, so
memory stays bounded by one batch plus the global vocabularies and item ids.

Each batch is validated as ``contract.read_dataset`` validates the whole table (columns, dtypes, nulls,
negative weights, timestamps). Duplicate keys are found within a batch only: across batches that would
need every key in memory at once.

    python -m lookalike_models.sharded.convert --from DIR --to DIR --shards S
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from lookalike_models.contract import (
    CAMPAIGN_FEATURES,
    INTERACTIONS,
    SCHEMA,
    SEEDS,
    USER_FEATURES,
    DataContractError,
    FeatureSchema,
    read_table,
    validate_campaign_features,
    validate_interactions,
    validate_seeds,
    validate_user_features,
)
from lookalike_models.io import atomic_directory
from lookalike_models.sharded.store_writer import ShardedWriter


def _batches(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    """``path``'s rows, ``batch_rows`` at a time; a missing or unreadable file is a contract error."""
    if not path.exists():
        raise DataContractError(path, "(file)", "file not found")
    try:
        reader = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise DataContractError(path, "(file)", f"not a readable Parquet file ({type(exc).__name__})") from exc
    if reader.metadata.num_rows == 0:
        raise DataContractError(path, "(rows)", "no rows")
    for batch in reader.iter_batches(batch_size=batch_rows):
        yield pl.from_arrow(batch)


def convert_to_shards(
    contract_folder: str | Path,
    out_folder: str | Path,
    n_shards: int,
    batch_rows: int = 2_000_000,
    max_multi_len: int = 50,
) -> Path:
    """Write ``contract_folder`` as a sharded folder at ``out_folder`` (atomically: a re-run replaces it
    whole); returns ``out_folder``."""
    source, out = Path(contract_folder), Path(out_folder)
    if not source.is_dir():
        raise DataContractError(source, "(folder)", "contract folder not found")
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    schema = FeatureSchema.from_yaml(source / SCHEMA) if (source / SCHEMA).exists() else FeatureSchema()
    seeds = validate_seeds(read_table(source / SEEDS), source / SEEDS)
    campaign_features = None
    if (source / CAMPAIGN_FEATURES).exists():
        path = source / CAMPAIGN_FEATURES
        campaign_features = validate_campaign_features(read_table(path), path, schema)
    with atomic_directory(out) as tmp:
        writer = ShardedWriter(tmp, n_shards, schema, max_multi_len)
        for batch in _batches(source / INTERACTIONS, batch_rows):
            writer.add_interactions(validate_interactions(batch, source / INTERACTIONS))
        if (source / USER_FEATURES).exists():
            for batch in _batches(source / USER_FEATURES, batch_rows):
                writer.add_user_features(validate_user_features(batch, source / USER_FEATURES, schema))
        writer.finish(seeds, campaign_features)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert a contract folder to a sharded folder.")
    parser.add_argument("--from", dest="source", required=True, help="contract folder")
    parser.add_argument("--to", dest="out", required=True, help="sharded folder to write (replaced whole)")
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--batch-rows", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    try:
        convert_to_shards(args.source, args.out, args.shards, args.batch_rows)
    except ValueError as exc:  # DataContractError included: one line, not a trace
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
