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
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
    compare.add_argument("--registered-model", help="default: the output root's for the config's data (README: MLflow)")
    compare.add_argument(
        "--config", help="nightly config whose data set's champion to show (default conf/nightly.yaml)"
    )
    recluster = sub.add_parser("recluster", help="refresh the live RALM model's centroids from current seeds")
    recluster.add_argument("--seeds", required=True, help="Parquet of current seeds (campaign_id, user_id)")
    settable(recluster, "output_root=runs")
    serve = sub.add_parser(
        "serve",
        help=f"serve both flows (deployments '{SERVED_NIGHTLY}', '{SERVED_ADHOC}') for a running Prefect server",
    )
    serve.add_argument("--cron", default="0 2 * * *", help="nightly schedule (default 02:00 every day)")
    return parser


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) received: the run stops as on Ctrl-C, reporting its end on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame) -> None:
    raise Interrupted(signum)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM becomes an exception, like Ctrl-C's KeyboardInterrupt: the flow run is marked crashed, the MLflow
    run KILLED, the lock released and the temporary server stopped, instead of the process vanishing with its
    run left RUNNING. (Prefect's own SIGTERM bridge, active while a flow runs, hands the signal on to this one
    once it has reported the crash.)"""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse itself reports its errors in one line, exit 2
    _local_defaults()
    try:
        with stop_on_sigterm():
            return run_command(args)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Interrupted)
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(
            f"lookalike: interrupted ({signal.Signals(signum).name}): the run stopped; what it had not published "
            "stays unpublished (LATEST unchanged), its flow run is marked crashed and its MLflow run KILLED",
            file=sys.stderr,
        )
        return 128 + signum
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
        check_data(config.data)
        if args.dry_run:
            return dry_run(config)
        from flows.local_server import run_scoped_server
        from flows.nightly_refresh import nightly_refresh
        from tasks.local_prefect import prepare_local_server

        prepare_local_server()  # two runs on a fresh PREFECT_HOME: one creates the server's database
        if not args.debug:
            quiet_user_error_tracebacks()
        with run_scoped_server():
            result = nightly_refresh(config)
        print(where_to_look(result.run_id, result.audiences_dir, result.mlflow_run_id, result.flow_run))
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
        check_data(config.data)
        check_campaign(config)
        if args.dry_run:
            return dry_run(config)
        from flows.expand_audience import expand_audience
        from flows.local_server import run_scoped_server
        from tasks.local_prefect import prepare_local_server

        prepare_local_server()  # two runs on a fresh PREFECT_HOME: one creates the server's database
        if not args.debug:
            quiet_user_error_tracebacks()
        with run_scoped_server():
            result = expand_audience(config)
        for note in result.notes:
            print(f"lookalike: warning: {note}", file=sys.stderr)
        for cid, path in result.published.items():
            print(f"{cid}: {Path(path).resolve()}")
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
        from lookalike_models.sources import data_set_key
        from tasks.registry import current_champion, rank_runs, registered_model_name

        data_set = data_set_key(build_config(NightlyConfig, args.config, "nightly.yaml", []).data)
        selection = SelectionConfig(registered_model=args.registered_model or "")
        name = registered_model_name(selection, args.output_root, data_set)
        print(f"champion of {name}: {current_champion(name)}")
        print(compare_table(rank_runs(args.experiment, args.metric, args.top), args.metric, args.experiment))
        return EXIT_OK
    if args.command == "recluster":
        if not Path(args.seeds).is_file():
            raise UsageError(f"--seeds {args.seeds}: file not found")
        config = with_overrides(ReclusterConfig(seeds_path=args.seeds), args.set)
        if args.dry_run:
            return dry_run(config)
        from flows.local_server import run_scoped_server
        from flows.recluster_centroids import recluster_centroids
        from tasks.local_prefect import prepare_local_server

        prepare_local_server()  # two runs on a fresh PREFECT_HOME: one creates the server's database
        if not args.debug:
            quiet_user_error_tracebacks()
        with run_scoped_server():
            results = recluster_centroids(config)
        print(recluster_summary(results, config))
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


def where_to_look(run_id: str, audiences_dir: str | None, mlflow_run_id: str | None, flow_run: str | None) -> str:
    """The run's last lines: where its audiences are, and how to open the MLflow and Prefect UIs."""
    from tasks.tracking import ui_base, ui_command, ui_is_served

    lines = [f"lookalike: run {run_id}"]
    lines.append(f"  audiences: {audiences_dir}" if audiences_dir else "  audiences: none published")
    if mlflow_run_id:
        ui = f"UI: {ui_base()}" if ui_is_served() else f"open it with `{ui_command()}` ({ui_base()})"
        lines.append(f"  MLflow run {mlflow_run_id}: {ui}")
    if flow_run:
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME

        if PREFECT_API_URL.value():
            lines.append(f"  Prefect flow run {flow_run}: on {PREFECT_API_URL.value()}")
        else:
            home = Path(PREFECT_HOME.value())
            # `make prefect-server` serves the project's PREFECT_HOME (.prefect); elsewhere, say which one.
            own = home.resolve() == (PROJECT_ROOT / ".prefect").resolve()
            how = "`make prefect-server` (prefect server start)"
            if not own:
                how = f"`PREFECT_HOME={home} prefect server start`"
            lines.append(f"  Prefect flow run {flow_run}: kept in {home}; open it with {how}, UI http://127.0.0.1:4200")
    return "\n".join(lines)


def compare_table(rows: list[dict], metric: str, experiment: str) -> str:
    """`lookalike compare`'s table: metric to 4 decimals, each model run's start time (UTC) and ids."""
    from datetime import UTC, datetime

    if not rows:
        return f"no model runs with {metric} in experiment {experiment}"
    lines = [f"| model | {metric} | started (UTC) | run | parent run |", "|---|---|---|---|---|"]
    for row in rows:
        value = row.get(metric)
        shown = "-" if value is None else f"{value:.4f}"
        start = row.get("start")
        started = datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m-%d %H:%M") if start else "-"
        lines.append(f"| {row['model']} | {shown} | {started} | {row['run_id']} | {row['parent']} |")
    return "\n".join(lines)


def recluster_summary(results: dict, config) -> str:
    """One line per re-clustered model, or why there was nothing to do."""
    from lookalike_models.publishing import read_latest
    from tasks.recluster import recluster_line

    if not results:
        live = read_latest(Path(config.output_root) / "audiences")
        return (
            f"lookalike: nothing to re-cluster: the live run {live} under {config.output_root} has none of the "
            f"models {', '.join(config.models)} (re-clustering refreshes RALM centroids)"
        )
    return "\n".join(f"lookalike: {recluster_line(result)}" for result in results.values())


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
