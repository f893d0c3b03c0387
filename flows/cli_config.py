"""`lookalike`'s configs, settled at the entry point: the YAML file (``--config``, or ``conf/<default>``), then
``--set`` overrides, validated at every depth; the input checked before anything starts. What the command
builds here is complete (every field set), so ``--dry-run`` prints exactly what the flow runs: the flow's own
fill-in of file defaults (``with_file_defaults``, for deployment runs given partial parameters) leaves it as is.
Every mistake becomes a :class:`UsageError` naming it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flows.cli_errors import EXIT_OK, UsageError, describe
from lookalike_models.contract import CAMPAIGN_ID


def parse_overrides(items: list[str]) -> list[str]:
    for item in items:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. publish.audience_fraction=0.02")
    return items


def build_config(cls, path: str | None, default: str, overrides: list[str]):
    """Load, override and validate a config; every mistake becomes a :class:`UsageError` naming it."""
    import yaml
    from pydantic import ValidationError

    from lookalike_models.config import CONF_DIR, load_config

    source = path or str(CONF_DIR / default)
    if not Path(source).is_file():
        raise UsageError(f"config file {source} not found")
    try:
        config = load_config(path, cls, default)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML ({' '.join(str(exc).split())})") from exc
    except ValidationError as exc:
        raise UsageError(f"{source}: {describe(exc)}") from exc
    except ValueError as exc:  # cross-field checks in model_post_init
        raise UsageError(f"{source}: {exc}") from exc
    return with_overrides(config, overrides)


def with_overrides(config, overrides: list[str]):
    """``--set`` overrides applied and re-validated; a mistake becomes a :class:`UsageError`."""
    import yaml
    from pydantic import ValidationError

    from lookalike_models.config import apply_overrides

    try:
        return apply_overrides(config, parse_overrides(overrides))
    except yaml.YAMLError as exc:
        raise UsageError(f"--set: value is not valid YAML ({' '.join(str(exc).split())})") from exc
    except ValidationError as exc:
        raise UsageError(f"--set: {describe(exc)}") from exc
    except (ValueError, AttributeError, TypeError) as exc:  # cross-field checks, or a key below a plain value
        raise UsageError(f"--set: {exc}") from exc


def expand_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.set)
    if args.campaign and args.seeds:
        raise UsageError("give --campaign or --seeds, not both")
    if args.campaign:
        overrides.append(f"campaign_id={json.dumps(args.campaign)}")
    if args.seeds is not None:
        ids = [s.strip() for s in args.seeds.split(",") if s.strip()]
        if not ids:
            raise UsageError("--seeds: give comma-separated user ids, e.g. --seeds 1000004,1000017")
        # Ids stay strings (YAML would read 1000004 as an integer); the flow maps them to the data's id type.
        overrides += ["campaign_id=null", f"seed_user_ids={json.dumps(ids)}"]
    if args.name:
        overrides.append(f"name={json.dumps(args.name)}")
    return overrides


def known_campaigns(source) -> list[str] | None:
    """Campaign ids of a data source, where they can be read without preparing the data (None otherwise)."""
    import polars as pl

    from lookalike_models.contract import SEEDS

    if source.kind == "folder" and source.path:
        path = Path(source.path) / SEEDS
        if not path.exists():
            raise UsageError(f"{path}: file not found (data.path must be a contract folder)")
        try:
            return sorted(pl.read_parquet(path, columns=[CAMPAIGN_ID])[CAMPAIGN_ID].cast(pl.String).unique())
        except Exception:  # noqa: BLE001 (a damaged file is reported by the contract check in the run)
            return None
    if source.kind == "synthetic":
        return [f"c{i:03d}" for i in range(source.synthetic.n_campaigns)]
    return None


def check_campaign(config) -> None:
    """``expand --campaign`` of a campaign the data does not have fails here, before Prefect starts."""
    if not config.campaign_id:
        return
    campaigns = known_campaigns(config.data)
    if campaigns is not None and config.campaign_id not in campaigns:
        examples = ", ".join(campaigns[:5]) + (f" ... ({len(campaigns)} in all)" if len(campaigns) > 5 else "")
        raise UsageError(f"campaign '{config.campaign_id}' is not in the data's seeds; known: {examples or 'none'}")


def check_data(source) -> None:
    """The input exists, before any flow starts (and in ``--dry-run``): a contract folder's seed file and its
    ``schema.yaml``, a real data set's raw files (naming ``LOOKALIKE_DATA_ROOT`` and ``data.path``)."""
    from lookalike_models.adapters import check_source_files
    from lookalike_models.contract import SCHEMA, FeatureSchema

    if source.kind == "folder":
        known_campaigns(source)
        if (Path(source.path) / SCHEMA).is_file():
            FeatureSchema.from_yaml(Path(source.path) / SCHEMA)  # a YAML mistake: its file and line, now
    else:
        check_source_files(source.kind, source.path)


def dry_run(config) -> int:
    print(f"{type(config).__name__} is valid:")
    print(json.dumps(config.model_dump(mode="json"), indent=1))
    return EXIT_OK
