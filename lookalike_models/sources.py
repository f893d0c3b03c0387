"""Turn a configured data source into a contract folder and then into encoded, leak-free data."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from lookalike_models.adapters import check_source_files
from lookalike_models.config import DataSource
from lookalike_models.contract import read_dataset
from lookalike_models.dataset import LookalikeData, encode
from lookalike_models.shapes import apply_shape, missing_campaigns
from lookalike_models.synthetic import write_synthetic

log = logging.getLogger(__name__)


def materialize(source: DataSource, workdir: str | Path) -> Path:
    """Contract folder for ``source``: the given folder as is, or generated/adapted under ``workdir``."""
    workdir = Path(workdir)
    if source.kind == "folder":
        if not source.path:
            raise ValueError("data.kind=folder needs data.path")
        return Path(source.path)
    if source.kind == "sharded":  # a sharded folder, read by sharded.store (encode_source)
        return Path(source.path)
    if source.kind == "synthetic":
        return write_synthetic(source.synthetic, workdir / "synthetic")
    # Real sets: adapters read them where they lie and write the contract outside the repository.
    check_source_files(source.kind, source.path)  # one line naming the file and LOOKALIKE_DATA_ROOT, not a trace
    adapter = importlib.import_module(f"lookalike_models.adapters.{source.kind}")
    options = source.adapter_options
    if options is None:  # tencent: the sample has no knobs
        return adapter.build(workdir / source.kind, source.path)
    return adapter.build(workdir / source.kind, source.path, options)


def data_set_key(source: DataSource) -> str:
    """Which data set a source reads, for telling nights of one data set from a switch to another: the kind,
    and for the real sets their raw folder. A contract folder (``folder``) is keyed by kind only: a nightly
    drop may land in a new folder every day, so its identity is checked on the data (``refresh.py``'s user
    overlap), not on the path."""
    if source.kind in ("synthetic", "folder"):
        return source.kind
    if source.kind == "sharded":
        return f"sharded:{Path(source.path).resolve()}"
    from lookalike_models.adapters import source_folder

    return f"{source.kind}:{source_folder(source.kind, source.path).resolve()}"


def encode_source(source: DataSource, workdir: str | Path) -> LookalikeData:
    """``source`` read, validated, shaped and encoded, the campaigns' own items still in its interactions
    (``load_encoded`` removes them; a benchmark may remove only some). A sharded folder is read whole."""
    if source.kind == "sharded":
        from lookalike_models.sharded.store import load_whole

        data = load_whole(source.path, source.min_seed_match_rate)
        # Lists were padded to the manifest's width at conversion; a shorter max_multi_len cuts them as
        # encode_multi would (it keeps each list's first max_multi_len values).
        data.users.multi = [m[:, : source.max_multi_len] for m in data.users.multi]
        return data
    raw = read_dataset(materialize(source, workdir))
    shaped = raw if source.shape.is_identity else apply_shape(raw, source.shape)
    data = encode(shaped, source.max_multi_len, source.min_seed_match_rate)
    if shaped is not raw:
        data.campaign_problems.update(missing_campaigns(raw, shaped, source.shape))
    return data


def load_encoded(source: DataSource, workdir: str | Path) -> LookalikeData:
    """``source`` as every model sees it: ``encode_source`` without the campaigns' own items (their
    interactions are the labels)."""
    data = encode_source(source, workdir).without_campaign_leakage()
    log.info(
        "data: %d users, %d items, %d interactions, %d campaigns (%d with problems)",
        data.n_users,
        data.n_items,
        data.user_idx.size,
        len(data.campaigns),
        len(data.campaign_problems),
    )
    return data
