"""``lookalike`` command: run the flows locally (ephemeral Prefect, local MLflow) or serve them.

Exit status: 0 a clean run; 1 the run failed; 2 a user mistake (bad option, config or input: one line
naming the problem, ``--debug`` for the traceback); 3 a partial night (some campaigns failed or were
skipped, the others published).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

# The command's parts, importable from here as before (``flows.cli.where_to_look`` ...).
from flows.cli_config import (  # noqa: F401
    build_config,
    check_campaign,
    check_data,
    dry_run,
    expand_overrides,
    known_campaigns,
    parse_overrides,
    with_overrides,
)
from flows.cli_errors import (  # noqa: F401
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    DropUserErrorTracebacks,
    Interrupted,
    UsageError,
    describe,
    is_user_error,
    quiet_user_error_tracebacks,
    stop_on_sigterm,
)
from flows.cli_output import PROJECT_ROOT, compare_table, recluster_summary, where_to_look

# Deployment names of `lookalike serve`, distinct from prefect.yaml's (nightly, adhoc, recluster): serving
# must never overwrite a worker deployment's schedule, pull step and path.
SERVED_NIGHTLY, SERVED_ADHOC = "nightly-served", "adhoc-served"


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


def run_command(args: argparse.Namespace) -> int:
    commands = {
        "nightly": run_nightly,
        "expand": run_expand,
        "generate": run_generate,
        "compare": run_compare,
        "recluster": run_recluster,
        "serve": run_serve,
    }
    if args.command not in commands:
        raise UsageError(f"unknown command {args.command}")
    return commands[args.command](args)


def _local_flow_run(flow, config, debug: bool):
    """One flow run on a temporary Prefect server, its user errors reported in one console line."""
    from flows.local_server import run_scoped_server
    from tasks.local_prefect import prepare_local_server

    prepare_local_server()  # two runs on a fresh PREFECT_HOME: one creates the server's database
    if not debug:
        quiet_user_error_tracebacks()
    with run_scoped_server():
        return flow(config)


def run_nightly(args: argparse.Namespace) -> int:
    from lookalike_models.config import NightlyConfig

    # Complete here (the YAML file, then --set): what --dry-run prints is what the flow runs.
    config = build_config(NightlyConfig, args.config, "nightly.yaml", args.set)
    check_data(config.data)
    if args.dry_run:
        return dry_run(config)
    from flows import nightly_refresh as nightly_flow

    result = _local_flow_run(nightly_flow.nightly_refresh, config, args.debug)
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


def run_expand(args: argparse.Namespace) -> int:
    from lookalike_models.config import ExpandConfig

    config = build_config(ExpandConfig, args.config, "expand.yaml", expand_overrides(args))
    if not config.campaign_id and not config.seed_user_ids:
        raise UsageError("nothing to expand: give --campaign ID or --seeds ID,ID,...")
    check_data(config.data)
    check_campaign(config)
    if args.dry_run:
        return dry_run(config)
    from flows import expand_audience as expand_flow

    result = _local_flow_run(expand_flow.expand_audience, config, args.debug)
    for note in result.notes:
        print(f"lookalike: warning: {note}", file=sys.stderr)
    for cid, path in result.published.items():
        print(f"{cid}: {Path(path).resolve()}")
    return EXIT_OK


def run_generate(args: argparse.Namespace) -> int:
    from lookalike_models.synthetic import SyntheticConfig, write_synthetic

    config = with_overrides(SyntheticConfig(), args.set)
    if args.dry_run:
        return dry_run(config)
    print(write_synthetic(config, args.out))
    return EXIT_OK


def run_compare(args: argparse.Namespace) -> int:
    from lookalike_models.config import NightlyConfig, SelectionConfig
    from lookalike_models.sources import data_set_key
    from tasks.registry import current_champion, rank_runs, registered_model_name

    data_set = data_set_key(build_config(NightlyConfig, args.config, "nightly.yaml", []).data)
    selection = SelectionConfig(registered_model=args.registered_model or "")
    name = registered_model_name(selection, args.output_root, data_set)
    print(f"champion of {name}: {current_champion(name)}")
    print(compare_table(rank_runs(args.experiment, args.metric, args.top), args.metric, args.experiment))
    return EXIT_OK


def run_recluster(args: argparse.Namespace) -> int:
    from lookalike_models.config import ReclusterConfig

    if not Path(args.seeds).is_file():
        raise UsageError(f"--seeds {args.seeds}: file not found")
    config = with_overrides(ReclusterConfig(seeds_path=args.seeds), args.set)
    if args.dry_run:
        return dry_run(config)
    from flows import recluster_centroids as recluster_flow

    results = _local_flow_run(recluster_flow.recluster_centroids, config, args.debug)
    print(recluster_summary(results, config))
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    from prefect import serve as prefect_serve

    from flows.expand_audience import expand_audience
    from flows.nightly_refresh import nightly_refresh

    prefect_serve(
        nightly_refresh.to_deployment(SERVED_NIGHTLY, cron=args.cron), expand_audience.to_deployment(SERVED_ADHOC)
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
