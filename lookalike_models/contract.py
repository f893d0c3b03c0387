"""The data contract: the Parquet tables every model reads, and their validation.

A dataset is one folder::

    interactions.parquet       user_id, item_id, [ts], [weight | rating], [domain]
    user_features.parquet      user_id + the fields declared in schema.yaml       (optional)
    seeds.parquet              campaign_id, user_id, [label]  (1 seed, 0 known non-converter)
    campaign_features.parquet  campaign_id + categorical fields, [item_id]         (optional)
    schema.yaml                which feature column is single / multi / continuous

A campaign's optional ``item_id`` names its own item (the movie, the app): interactions with it are the
label, so the pipeline removes them before any model trains.

Every check raises :class:`DataContractError` naming the file, the column and an example value, so a
bad upload is fixed in one round trip. Nothing here writes files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml

INTERACTIONS = "interactions.parquet"
USER_FEATURES = "user_features.parquet"
SEEDS = "seeds.parquet"
CAMPAIGN_FEATURES = "campaign_features.parquet"
SCHEMA = "schema.yaml"

# Column names of the contract's tables: one spelling, used by every reader and writer.
USER_ID, ITEM_ID, CAMPAIGN_ID = "user_id", "item_id", "campaign_id"
LABEL, TS, WEIGHT, RATING, DOMAIN = "label", "ts", "weight", "rating", "domain"

# Campaign ids become path components of the published audiences: allow no separators, no "..".
_SAFE_CAMPAIGN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class DataContractError(ValueError):
    """Input that breaks the contract. The message names file, column and an example value."""

    def __init__(self, file: str | Path, column: str, problem: str, example: object = None):
        self.file, self.column, self.problem, self.example = str(file), column, problem, example
        suffix = f" Example: {example!r}" if example is not None else ""
        super().__init__(f"{self.file}: column '{column}': {problem}.{suffix}")


@dataclass(frozen=True)
class FeatureSchema:
    """Which columns of user_features / campaign_features are which kind of field."""

    user_single: list[str] = field(default_factory=list)
    user_multi: list[str] = field(default_factory=list)
    user_continuous: list[str] = field(default_factory=list)
    campaign_single: list[str] = field(default_factory=list)

    @classmethod
    def from_yaml(cls, path: str | Path) -> FeatureSchema:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise DataContractError(path, "(yaml)", f"not valid YAML{where}: {problem}") from None
        if not isinstance(raw, dict):
            raise DataContractError(path, "(yaml)", f"must be a mapping, got {type(raw).__name__}", raw)
        users, campaigns = raw.get("user_features") or {}, raw.get("campaign_features") or {}
        for section, value in (("user_features", users), ("campaign_features", campaigns)):
            if not isinstance(value, dict):
                raise DataContractError(path, section, "must be a mapping such as {single: [...], multi: [...]}", value)
        unknown = set(users) - {"single", "multi", "continuous"}
        if unknown:
            raise DataContractError(path, "user_features", "unknown field kind", sorted(unknown)[0])
        return cls(
            user_single=list(users.get("single") or []),
            user_multi=list(users.get("multi") or []),
            user_continuous=list(users.get("continuous") or []),
            campaign_single=list(campaigns.get("single") or []),
        )

    def to_yaml(self, path: str | Path) -> None:
        doc = {
            "user_features": {
                "single": self.user_single,
                "multi": self.user_multi,
                "continuous": self.user_continuous,
            },
            "campaign_features": {"single": self.campaign_single},
        }
        Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))


def check_campaign_id(campaign_id: str, file: str | Path = SEEDS) -> str:
    """Refuse ids that could escape the output folder (``../x``, ``a/b``) or hide files (``.x``)."""
    if not isinstance(campaign_id, str) or not _SAFE_CAMPAIGN_ID.match(campaign_id) or ".." in campaign_id:
        raise DataContractError(
            file, CAMPAIGN_ID, "must be 1-128 chars of [A-Za-z0-9_.-], start alphanumeric, no '..'", campaign_id
        )
    return campaign_id


def read_table(path: str | Path) -> pl.DataFrame:
    """Read one Parquet file; a missing or corrupt file is a contract error, not a stack trace."""
    path = Path(path)
    if not path.exists():
        raise DataContractError(path, "(file)", "file not found")
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # pyarrow/polars raise many types for a damaged file
        raise DataContractError(path, "(file)", f"not a readable Parquet file ({type(exc).__name__})") from exc


def _require_columns(df: pl.DataFrame, file: Path, columns: list[str]) -> None:
    for col in columns:
        if col not in df.columns:
            raise DataContractError(file, col, f"required column missing; found {df.columns}")


def _require_id_column(df: pl.DataFrame, file: Path, col: str) -> None:
    dtype = df.schema[col]
    if not (dtype.is_integer() or dtype == pl.String):
        example = df[col].drop_nulls().head(1).to_list()
        raise DataContractError(
            file, col, f"ids must be integers or strings, got {dtype}", example[0] if example else None
        )
    nulls = df.filter(pl.col(col).is_null() | (pl.col(col).cast(pl.String) == ""))
    if nulls.height:
        raise DataContractError(
            file, col, f"{nulls.height} rows have a missing (null/NaN/empty) id", nulls.row(0, named=True)
        )


def _require_numeric(df: pl.DataFrame, file: Path, col: str) -> None:
    dtype = df.schema[col]
    if not dtype.is_numeric():
        raise DataContractError(file, col, f"must be numeric, got {dtype}", df[col].head(1).to_list()[0])
    bad = df.filter(pl.col(col).is_null() | (pl.col(col).cast(pl.Float64).is_nan()))
    if bad.height:
        raise DataContractError(file, col, f"{bad.height} rows are null or NaN", bad.row(0, named=True))


def _reject_duplicates(df: pl.DataFrame, file: Path, key: list[str]) -> None:
    # One 64-bit hash per row first; the exact multi-column check runs only on rows whose hash repeats.
    # (The exact check over all rows held ~3.5 GB at 20M interactions, the nightly's memory peak.) Repeats
    # are found by sorting the hashes: polars' hash-table ``is_duplicated`` took 24.7 s on 62M rows, the
    # sort 1.9 s (BENCHMARKS.md, issue 14).
    hashes = df.select(pl.struct(key).hash()).to_series()
    ordered = hashes.sort()
    repeats = ordered.filter(ordered == ordered.shift(1))
    if repeats.is_empty():
        return
    candidates = df.filter(hashes.is_in(repeats.unique()))
    dup = candidates.filter(candidates.select(key).is_duplicated())
    if dup.height:
        raise DataContractError(file, ",".join(key), f"{dup.height} rows repeat the same key", dup.row(0, named=True))


def _require_timestamps(df: pl.DataFrame, file: Path) -> None:
    """``ts``: integers (seconds since the epoch) or timestamps, never null, never before 1970."""
    dtype = df.schema[TS]
    if not (dtype.is_integer() or dtype.is_temporal()):
        raise DataContractError(file, TS, f"must be an integer or a timestamp, got {dtype}", df[TS][0])
    nulls = df.filter(pl.col(TS).is_null())
    if nulls.height:
        raise DataContractError(file, TS, f"{nulls.height} rows have a null timestamp", nulls.row(0, named=True))
    if dtype.is_integer() or dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
        negative = df.filter(pl.col(TS).cast(pl.Int64) < 0)
        if negative.height:
            raise DataContractError(
                file, TS, f"{negative.height} rows have a negative timestamp (before 1970)", negative.row(0, named=True)
            )


def validate_interactions(df: pl.DataFrame, file: Path) -> pl.DataFrame:
    """Check and normalise interactions: ``weight`` defaults to ``rating`` or 1, ``domain`` to "default"."""
    if df.height == 0:
        raise DataContractError(file, "(rows)", "no interactions")
    _require_columns(df, file, [USER_ID, ITEM_ID])
    _require_id_column(df, file, USER_ID)
    _require_id_column(df, file, ITEM_ID)
    # Report a problem under the column the advertiser wrote: ``rating`` when weight is derived from it.
    source = WEIGHT if WEIGHT in df.columns else RATING if RATING in df.columns else None
    if source:
        _require_numeric(df, file, source)
        negative = df.filter(pl.col(source) < 0)
        if negative.height:
            raise DataContractError(
                file, source, f"{negative.height} rows are negative (weights must be >= 0)", negative.row(0, named=True)
            )
    if WEIGHT not in df.columns:
        df = df.with_columns((pl.col(RATING) if source else pl.lit(1.0)).alias(WEIGHT))
    if TS in df.columns:
        _require_timestamps(df, file)
    if DOMAIN not in df.columns:
        df = df.with_columns(pl.lit("default").alias(DOMAIN))
    elif df.schema[DOMAIN] != pl.String or df[DOMAIN].null_count():
        raise DataContractError(file, DOMAIN, "must be a non-null string", df[DOMAIN].head(1).to_list()[0])
    _reject_duplicates(df, file, [c for c in (USER_ID, ITEM_ID, TS, DOMAIN) if c in df.columns])
    return df.with_columns(pl.col(WEIGHT).cast(pl.Float32))


def validate_seeds(df: pl.DataFrame, file: Path) -> pl.DataFrame:
    """Check seeds; ``label`` defaults to 1. Per-campaign problems are left to :func:`campaign_problems`."""
    if df.height == 0:
        raise DataContractError(file, "(rows)", "the seed file has no rows")
    _require_columns(df, file, [CAMPAIGN_ID, USER_ID])
    _require_id_column(df, file, CAMPAIGN_ID)
    _require_id_column(df, file, USER_ID)
    df = df.with_columns(pl.col(CAMPAIGN_ID).cast(pl.String))
    if LABEL not in df.columns:
        df = df.with_columns(pl.lit(1, dtype=pl.Int8).alias(LABEL))
    if not df.schema[LABEL].is_integer() and df.schema[LABEL] != pl.Boolean:
        raise DataContractError(file, LABEL, f"must be 0/1 integers, got {df.schema['label']}", df[LABEL][0])
    bad = df.filter(~pl.col(LABEL).cast(pl.Int64).is_in([0, 1]) | pl.col(LABEL).is_null())
    if bad.height:
        raise DataContractError(file, LABEL, "labels must be 1 (seed) or 0 (non-converter)", bad.row(0, named=True))
    _reject_duplicates(df, file, [CAMPAIGN_ID, USER_ID])
    return df.with_columns(pl.col(LABEL).cast(pl.Int8))


def validate_user_features(df: pl.DataFrame, file: Path, schema: FeatureSchema) -> pl.DataFrame:
    _require_columns(df, file, [USER_ID, *schema.user_single, *schema.user_multi, *schema.user_continuous])
    _require_id_column(df, file, USER_ID)
    _reject_duplicates(df, file, [USER_ID])
    for col in schema.user_multi:
        if not isinstance(df.schema[col], pl.List):
            raise DataContractError(
                file, col, f"multi-valued field must be a list column, got {df.schema[col]}", df[col][0]
            )
    for col in schema.user_continuous:
        if not df.schema[col].is_numeric():
            raise DataContractError(file, col, f"continuous field must be numeric, got {df.schema[col]}", df[col][0])
    return df


def validate_campaign_features(df: pl.DataFrame, file: Path, schema: FeatureSchema) -> pl.DataFrame:
    _require_columns(df, file, [CAMPAIGN_ID, *schema.campaign_single])
    _require_id_column(df, file, CAMPAIGN_ID)
    df = df.with_columns(pl.col(CAMPAIGN_ID).cast(pl.String))
    _reject_duplicates(df, file, [CAMPAIGN_ID])
    return df


@dataclass
class RawDataset:
    """The validated tables of one dataset folder, ids still as the advertiser gave them."""

    folder: Path
    interactions: pl.DataFrame
    seeds: pl.DataFrame
    schema: FeatureSchema
    user_features: pl.DataFrame | None = None
    campaign_features: pl.DataFrame | None = None


def read_dataset(folder: str | Path) -> RawDataset:
    """Read and validate a dataset folder (see module docstring)."""
    folder = Path(folder)
    schema_path = folder / SCHEMA
    schema = FeatureSchema.from_yaml(schema_path) if schema_path.exists() else FeatureSchema()
    interactions = validate_interactions(read_table(folder / INTERACTIONS), folder / INTERACTIONS)
    seeds = validate_seeds(read_table(folder / SEEDS), folder / SEEDS)
    user_features = campaign_features = None
    if (folder / USER_FEATURES).exists():
        path = folder / USER_FEATURES
        user_features = validate_user_features(read_table(path), path, schema)
    if (folder / CAMPAIGN_FEATURES).exists():
        path = folder / CAMPAIGN_FEATURES
        campaign_features = validate_campaign_features(read_table(path), path, schema)
    for name, frame in ((USER_ID, interactions), (USER_ID, seeds)):
        if user_features is not None and frame.schema[name] != user_features.schema[USER_ID]:
            raise DataContractError(
                folder / USER_FEATURES,
                USER_ID,
                f"id type {user_features.schema['user_id']} differs from {frame.schema[name]} elsewhere",
                user_features[USER_ID][0],
            )
    if seeds.schema[USER_ID] != interactions.schema[USER_ID]:
        raise DataContractError(
            folder / SEEDS,
            USER_ID,
            f"id type {seeds.schema['user_id']} differs from interactions' {interactions.schema['user_id']}",
            seeds[USER_ID][0],
        )
    return RawDataset(folder, interactions, seeds, schema, user_features, campaign_features)


def write_dataset(
    folder: str | Path,
    interactions: pl.DataFrame,
    seeds: pl.DataFrame,
    schema: FeatureSchema | None = None,
    user_features: pl.DataFrame | None = None,
    campaign_features: pl.DataFrame | None = None,
) -> Path:
    """Write a dataset folder atomically: into ``<folder>.tmp`` first, renamed into place at the end."""
    from lookalike_models.io import atomic_directory

    with atomic_directory(folder) as tmp:
        interactions.write_parquet(tmp / INTERACTIONS)
        seeds.write_parquet(tmp / SEEDS)
        (schema or FeatureSchema()).to_yaml(tmp / SCHEMA)
        if user_features is not None:
            user_features.write_parquet(tmp / USER_FEATURES)
        if campaign_features is not None:
            campaign_features.write_parquet(tmp / CAMPAIGN_FEATURES)
    return Path(folder)
