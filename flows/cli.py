"""``lookalike`` command: run the flows locally (ephemeral Prefect, local MLflow) or serve them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _local_defaults() -> None:
    # No server needed: Prefect starts a temporary one with its SQLite DB under the project.
    os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lookalike", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    nightly = sub.add_parser("nightly", help="run the nightly refresh flow once")
    nightly.add_argument("--config", help="YAML config (default conf/nightly.yaml)")
    nightly.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override one config value, e.g. publish.audience_fraction=0.02")
    expand = sub.add_parser("expand", help="expand one campaign or an inline seed list")
    expand.add_argument("--config", help="YAML config (default conf/expand.yaml)")
    expand.add_argument("--campaign", help="campaign id from the data's seeds")
    expand.add_argument("--seeds", help="comma-separated seed user ids (instead of --campaign)")
    expand.add_argument("--name", help="campaign id to publish an inline seed list under")
    expand.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    gen = sub.add_parser("generate", help="write a synthetic contract folder")
    gen.add_argument("out")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="SyntheticConfig field, e.g. n_users=1000000")
    compare = sub.add_parser("compare", help="rank tracked model runs by a held-out metric; show the champion")
    compare.add_argument("--experiment", default="lookalike-nightly")
    compare.add_argument("--metric", default="recall_at_5pct")
    compare.add_argument("--top", type=int, default=10)
    compare.add_argument("--registered-model", default="lookalike-audience")
    recluster = sub.add_parser("recluster", help="refresh the live RALM model's centroids from current seeds")
    recluster.add_argument("--seeds", required=True, help="Parquet of current seeds (campaign_id, user_id)")
    recluster.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    serve = sub.add_parser("serve", help="serve both flows (nightly on a cron) for a running Prefect server")
    serve.add_argument("--cron", default="0 2 * * *", help="nightly schedule (default 02:00 every day)")
    args = parser.parse_args(argv)
    _local_defaults()

    from lookalike_models.config import ExpandConfig, NightlyConfig, apply_overrides, load_config

    if args.command == "nightly":
        config = apply_overrides(load_config(args.config, NightlyConfig), args.set)
        from flows.nightly_refresh import nightly_refresh

        result = nightly_refresh(config)
        return 1 if result["failed"] and not result["published"] else 0
    if args.command == "expand":
        overrides = list(args.set)
        if args.campaign:
            overrides.append(f"campaign_id={args.campaign}")
        if args.seeds:
            overrides += ["campaign_id=null", f"seed_user_ids=[{args.seeds}]"]
        if args.name:
            overrides.append(f"name={args.name}")
        config = apply_overrides(load_config(args.config, ExpandConfig, "expand.yaml"), overrides)
        from flows.expand_audience import expand_audience

        print(expand_audience(config))
        return 0
    if args.command == "generate":
        from lookalike_models.synthetic import SyntheticConfig, write_synthetic

        print(write_synthetic(apply_overrides(SyntheticConfig(), args.set), args.out))
        return 0
    if args.command == "compare":
        from tasks.registry import current_champion, rank_runs

        print(f"champion of {args.registered_model}: {current_champion(args.registered_model)}")
        print(f"| model | {args.metric} | run | parent run |\n|---|---|---|---|")
        for row in rank_runs(args.experiment, args.metric, args.top):
            print(f"| {row['model']} | {row[args.metric]} | {row['run_id']} | {row['parent']} |")
        return 0
    if args.command == "recluster":
        from flows.recluster_centroids import recluster_centroids
        from lookalike_models.config import ReclusterConfig

        print(recluster_centroids(apply_overrides(ReclusterConfig(seeds_path=args.seeds), args.set)))
        return 0
    if args.command == "serve":
        from prefect import serve as prefect_serve

        from flows.expand_audience import expand_audience
        from flows.nightly_refresh import nightly_refresh

        prefect_serve(nightly_refresh.to_deployment("nightly", cron=args.cron),
                      expand_audience.to_deployment("adhoc"))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
