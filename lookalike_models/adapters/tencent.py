"""Tencent Look-alike 2018 samples (MetaHeac's processed schema) as look-alike data.

Source: Tencent Advertising Algorithm Competition 2018 (Lookalike), as processed for MetaHeac
(Zhu et al., KDD 2021). The public samples in ``../shared/data/tencent-lookalike-2018`` are user-ad rows,
all of label 1 (seeds only): one row = one converter of one ad (``aid``), with the user's fields and the
ad's fields. Mapping onto the contract:

- campaign = ``aid`` (``campaign_id`` = ``aid_<code>``); seeds = its rows, label 1 (the sample has no
  negatives: models must sample non-seeds and say so).
- user = one row (``user_id`` = the sample's ``row_id``; the sample has no uid).
- ``user_features``: the 7 single-valued fields (carrier, consumptionAbility, LBS, age, education, gender,
  house) and the 7 multi-valued fields (interest1-3, kw1-2, topic1-2) as list columns cut to
  ``<field>_length`` (the padding code is the field's own "missing" code, not 0, so it must not be kept).
- ``campaign_features``: the 6 ad fields (advertiserId, campaignId, creativeSize, adCategoryId, productId,
  productType), codes as in the sample.
- ``interactions`` (required by the contract): the user's interest/keyword/topic tokens as items
  (``item_id`` = ``<field>:<code>``, domain ``profile``), so behaviour-based models have something to read.
  The ads themselves are not items, so nothing leaks the label.

Values keep the sample's codes (as strings in the contract's encoding), so each field's vocabulary is
exactly the sample's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lookalike_models.adapters import shared_data_root
from lookalike_models.contract import CAMPAIGN_ID, DOMAIN, ITEM_ID, LABEL, USER_ID, WEIGHT, FeatureSchema, write_dataset

SINGLE_FIELDS = ["carrier", "consumptionAbility", "LBS", "age", "education", "gender", "house"]
MULTI_FIELDS = ["interest1", "interest2", "interest3", "kw1", "kw2", "topic1", "topic2"]
AD_FIELDS = ["advertiserId", "campaignId", "creativeSize", "adCategoryId", "productId", "productType"]
# Largest real sample first: it contains every row of the two PaddleRec samples.
DEFAULT_SAMPLE = "derived/simuler_metaheac_train_stage2.csv"


def sample_file(source: str | Path | None = None) -> Path:
    """The MetaHeac-format file to read (``.csv`` of ``derived/`` or an original ``.pkl``): ``source`` itself
    if a file, else the default sample under it."""
    source = Path(source) if source else shared_data_root() / "tencent-lookalike-2018"
    return source if source.is_file() else source / DEFAULT_SAMPLE


# The only classes a MetaHeac sample pickle needs (pandas < 2 wrote it); anything else is refused.
_PICKLE_CLASSES = {
    ("builtins", "slice"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.numeric", "Int64Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.core.internals.managers", "BlockManager"),
}


def _read_pickle(path: Path) -> pl.DataFrame:
    """A MetaHeac pickle (pandas DataFrame) read with a whitelisting unpickler; pandas >= 2 is fine."""
    import pickle

    import pandas as pd

    class SampleUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) not in _PICKLE_CLASSES:
                raise pickle.UnpicklingError(f"{path}: refusing to load {module}.{name}")
            if name == "Int64Index":  # removed in pandas 2
                return pd.Index
            if module == "numpy.core.multiarray":  # numpy 2 moved it
                import numpy.core.multiarray as multiarray

                return multiarray._reconstruct
            return super().find_class(module, name)

    with open(path, "rb") as f:
        df = SampleUnpickler(f).load()
    columns = {"row_id": np.asarray(df.index, np.int64)}
    for col in df.columns:
        values = df[col].to_numpy()
        columns[col] = [np.asarray(v, np.int64).tolist() for v in values] if col in MULTI_FIELDS else values
    return pl.DataFrame(columns)


def read_sample(path: str | Path) -> pl.DataFrame:
    """The MetaHeac-format rows (derived CSV or the original pickle) with the multi-valued fields as int
    lists cut to their ``<field>_length``."""
    path = Path(path)
    if path.suffix == ".pkl":
        frame = _read_pickle(path)
    else:
        frame = pl.read_csv(path, schema_overrides={f: pl.String for f in MULTI_FIELDS}).with_columns(
            [pl.col(f).str.split(" ").list.eval(pl.element().cast(pl.Int64)) for f in MULTI_FIELDS]
        )
    if "row_id" not in frame.columns:
        frame = frame.with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))
    return frame.with_columns([pl.col(f).list.head(pl.col(f"{f}_length")).alias(f) for f in MULTI_FIELDS])


def build(out_dir: str | Path, source_path: str | Path | None = None) -> Path:
    """Write the Tencent sample at ``source_path`` (folder, CSV or pickle) as a contract folder; returns it."""
    rows = read_sample(sample_file(source_path))
    rows = rows.with_columns(pl.format("aid_{}", "aid").alias(CAMPAIGN_ID), pl.col("row_id").alias(USER_ID))
    seeds = rows.select(CAMPAIGN_ID, USER_ID, pl.col(LABEL).clip(0, 1).cast(pl.Int8))
    user_features = rows.select(
        USER_ID,
        *[pl.col(f).cast(pl.String) for f in SINGLE_FIELDS],
        *[pl.col(f).list.eval(pl.element().cast(pl.String)) for f in MULTI_FIELDS],
    )
    # One row per ad: its fields are the same on every row of that ad.
    campaign_features = (
        rows.group_by(CAMPAIGN_ID).agg([pl.col(f).first().cast(pl.String) for f in AD_FIELDS]).sort(CAMPAIGN_ID)
    )
    tokens = pl.concat(
        [
            rows.select(USER_ID, pl.col(f).alias("code"))
            .explode("code")
            .drop_nulls("code")
            .select(USER_ID, pl.format(f"{f}:{{}}", "code").alias(ITEM_ID))
            for f in MULTI_FIELDS
        ]
    ).unique(maintain_order=True)
    interactions = tokens.with_columns(pl.lit(1.0, pl.Float32).alias(WEIGHT), pl.lit("profile").alias(DOMAIN))
    schema = FeatureSchema(
        user_single=SINGLE_FIELDS, user_multi=MULTI_FIELDS, user_continuous=[], campaign_single=AD_FIELDS
    )
    return write_dataset(out_dir, interactions, seeds, schema, user_features, campaign_features)


def field_vocabularies(source_path: str | Path | None = None) -> dict[str, set[str]]:
    """Distinct values of every user and ad field in the raw sample (padding excluded), as strings."""
    rows = read_sample(sample_file(source_path))
    vocab = {f: {str(v) for v in rows[f].unique().to_list()} for f in SINGLE_FIELDS + AD_FIELDS}
    for f in MULTI_FIELDS:
        vocab[f] = {str(v) for v in np.unique(rows[f].explode().drop_nulls().to_numpy())}
    return vocab
