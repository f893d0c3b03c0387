"""``lookalike`` command: run the flows locally (ephemeral Prefect, local MLflow) or serve them.

Exit status: 0 a clean run; 1 the run failed; 2 a user mistake (bad option, config or input: one line
naming the problem, ``--debug`` for the traceback); 3 a partial night (some campaigns failed or were
skipped, the others published).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from lookalike_models.contract import CAMPAIGN_ID

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
# Deployment names of `lookalike serve`, distinct from prefect.yaml's (nightly, adhoc, recluster): serving
# must never overwrite a worker deployment's schedule, pull step and path.
SERVED_NIGHTLY, SERVED_ADHOC = "nightly-served", "adhoc-served"


class UsageError(Exception):
    """A mistake in the command line, the config or the input: reported in one line, exit status 2."""


def _local_defaults() -> None:
    # No server needed: Prefect starts a temporary one with its SQLite DB under the project.
    os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def settable(p: argparse.ArgumentParser, example: str) -> None:
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"override one config value (YAML value), e.g. {example}",
        )
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="validate the options, the config and (where cheap) the input; start nothing",
        )

    nightly = sub.add_parser("nightly", help="run the nightly refresh flow once")
    nightly.add_argument("--config", help="YAML config (default conf/nightly.yaml)")
    settable(nightly, "publish.audience_fraction=0.02")
    expand = sub.add_parser("expand", help="expand one campaign or an inline seed list")
    expand.add_argument("--config", help="YAML config (default conf/expand.yaml)")
    expand.add_argument("--campaign", help="campaign id from the data's seeds")
    expand.add_argument("--seeds", help="comma-separated seed user ids (instead of --campaign)")
    expand.add_argument("--name", help="campaign id to publish an inline seed list under")
    settable(expand, "audience_fraction=0.01")
    gen = sub.add_parser("generate", help="write a synthetic contract folder")
    gen.add_argument("out")
    settable(gen, "n_users=1000000")
    compare = sub.add_parser("compare", help="rank tracked model runs by a held-out metric; show the champion")
    compare.add_argument("--experiment", default="lookalike-nightly")
    compare.add_argument("--metric", default="recall_at_5pct")
    compare.add_argument("--top", type=int, default=10)
    compare.add_argument("--output-root", default="runs", help="whose champion to show (default runs)")
    compare.add_argument("--registered-model", help="default: the output root's (README: MLflow)")
    recluster = sub.add_parser("recluster", help="refresh the live RALM model's centroids from current seeds")
    recluster.add_argument("--seeds", required=True, help="Parquet of current seeds (campaign_id, user_id)")
    settable(recluster, "output_root=runs")
    serve = sub.add_parser(
        "serve",
        help=f"serve both flows (deployments '{SERVED_NIGHTLY}', '{SERVED_ADHOC}') for a running Prefect server",
    )
    serve.add_argument("--cron", default="0 2 * * *", help="nightly schedule (default 02:00 every day)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse itself reports its errors in one line, exit 2
    _local_defaults()
    try:
        return run_command(args)
    except KeyboardInterrupt:
        print("lookalike: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (the one place where every error becomes an exit status)
        if args.debug:
            raise
        user_error = is_user_error(exc)
        kind = "error" if user_error else f"run failed: {type(exc).__name__}"
        print(f"lookalike: {kind}: {describe(exc)}", file=sys.stderr)
        if not user_error:
            print("lookalike: rerun with --debug for the traceback", file=sys.stderr)
        return EXIT_USAGE if user_error else EXIT_FAILED


def is_user_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    from lookalike_models.contract import DataContractError
    from lookalike_models.locking import RunLockedError

    return isinstance(exc, UsageError | DataContractError | ValidationError | RunLockedError)


def describe(exc: BaseException) -> str:
    """One line for an error: pydantic's list of errors becomes 'key: problem (got value)'."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors()[:3]:
            key = ".".join(str(p) for p in error["loc"]) or "(config)"
            if error["type"] == "extra_forbidden":
                parts.append(f"unknown setting '{key}'")
            elif error["type"] == "value_error":  # a cross-field check: its message says it all
                parts.append(error["msg"].removeprefix("Value error, "))
            else:
                parts.append(f"{key}: {error['msg']} (got {error.get('input')!r:.80})")
        more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        return "; ".join(parts) + more
    return " ".join(str(exc).split())


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


class DropUserErrorTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and is_user_error(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_user_error_tracebacks() -> None:
    """Prefect logs each failed task and flow with its traceback (2-4 of them per error). For a user
    mistake the one-line message is the whole story: drop the traceback from the console (the Prefect UI
    and API logs keep it); ``--debug`` keeps everything."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, DropUserErrorTracebacks) for f in handler.filters
        ):
            handler.addFilter(DropUserErrorTracebacks())


def run_command(args: argparse.Namespace) -> int:
    from lookalike_models.config import ExpandConfig, NightlyConfig, ReclusterConfig

    if args.command == "nightly":
        config = build_config(NightlyConfig, args.config, "nightly.yaml", args.set)
        if args.config is None:  # the same defaults a deployment run gets
            from lookalike_models.config import with_file_defaults

            config = with_file_defaults(config)
        if config.data.kind == "folder":
            known_campaigns(config.data)
        if args.dry_run:
            return dry_run(config)
        from flows.nightly_refresh import nightly_refresh
        from tasks.local_prefect import prepare_local_server

        prepare_local_server()  # two runs on a fresh PREFECT_HOME: one creates the server's database
        if not args.debug:
            quiet_user_error_tracebacks()
        result = nightly_refresh(config)
        if result.status == "failed":
            print("lookalike: run failed: no audience was published", file=sys.stderr)
            return EXIT_FAILED
        if result.status == "partial":
            print(
                f"lookalike: partial run: {len(result.failed)} campaign failures, {len(result.skipped)} "
                "campaigns skipped (listed above)",
                file=sys.stderr,
            )
            return EXIT_PARTIAL
        return EXIT_OK
    if args.command == "expand":
        config = build_config(ExpandConfig, args.config, "expand.yaml", expand_overrides(args))
        if not config.campaign_id and not config.seed_user_ids:
            raise UsageError("nothing to expand: give --campaign ID or --seeds ID,ID,...")
        check_campaign(config)
        if args.dry_run:
            return dry_run(config)
        from flows.expand_audience import expand_audience
        from tasks.local_prefect import prepare_local_server

        prepare_local_server()  # two runs on a fresh PREFECT_HOME: one creates the server's database
        if not args.debug:
            quiet_user_error_tracebacks()
        result = expand_audience(config)
        for cid, path in result.published.items():
            print(f"{cid}: {path}")
        return EXIT_OK
    if args.command == "generate":
        from lookalike_models.synthetic import SyntheticConfig, write_synthetic

        config = with_overrides(SyntheticConfig(), args.set)
        if args.dry_run:
            return dry_run(config)
        print(write_synthetic(config, args.out))
        return EXIT_OK
    if args.command == "compare":
        from lookalike_models.config import SelectionConfig
        from tasks.registry import current_champion, rank_runs, registered_model_name

        name = registered_model_name(SelectionConfig(registered_model=args.registered_model), args.output_root)
        print(f"champion of {name}: {current_champion(name)}")
        print(f"| model | {args.metric} | run | parent run |\n|---|---|---|---|")
        for row in rank_runs(args.experiment, args.metric, args.top):
            print(f"| {row['model']} | {row[args.metric]} | {row['run_id']} | {row['parent']} |")
        return EXIT_OK
    if args.command == "recluster":
        if not Path(args.seeds).is_file():
            raise UsageError(f"--seeds {args.seeds}: file not found")
        config = with_overrides(ReclusterConfig(seeds_path=args.seeds), args.set)
        if args.dry_run:
            return dry_run(config)
        from flows.recluster_centroids import recluster_centroids
        from tasks.local_prefect import prepare_local_server

        prepare_local_server()  # two runs on a fresh PREFECT_HOME: one creates the server's database
        if not args.debug:
            quiet_user_error_tracebacks()
        print(recluster_centroids(config))
        return EXIT_OK
    if args.command == "serve":
        from prefect import serve as prefect_serve

        from flows.expand_audience import expand_audience
        from flows.nightly_refresh import nightly_refresh

        prefect_serve(
            nightly_refresh.to_deployment(SERVED_NIGHTLY, cron=args.cron), expand_audience.to_deployment(SERVED_ADHOC)
        )
        return EXIT_OK
    raise UsageError(f"unknown command {args.command}")


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


def dry_run(config) -> int:
    print(f"{type(config).__name__} is valid:")
    print(json.dumps(config.model_dump(mode="json"), indent=1))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
