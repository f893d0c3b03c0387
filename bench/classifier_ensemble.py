"""Per-campaign classifier and ensemble (issue 10, items 5-6) against item_logreg and the ensemble's members.

    LOOKALIKE_DATA_ROOT=/work/shared/data python bench/classifier_ensemble.py --splits reported \
        --out bench/results/classifier_ensemble.md
    python bench/classifier_ensemble.py --splits tuning --data movielens \
        --variants '{"clf_fixed_C4": {"model": "pinterest_classifier", "tuning": "fixed"}}'   # choosing defaults

Protocol: ``lookalike_models.protocol`` (per split seed 10% of each campaign's seeds held out plus as many
non-seeds; each campaign's metric averaged over the splits; paired 95% bootstrap CI over campaigns).
Every model is compared with ``item_logreg``; every ensemble (a model whose scorer is pinterest_ensemble)
also with its best member, the member with the higher mean of the metric over the same campaigns.
Defaults are chosen on ``--splits tuning`` (100-104) only; ``reported`` (0-4) is what the results show.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import comparison_section, load_data, machine, write_results  # noqa: E402
from lookalike_models.catalog import build_scorer  # noqa: E402
from lookalike_models.evaluation import audience_sizes, campaign_means, holdout_split  # noqa: E402
from lookalike_models.protocol import (  # noqa: E402
    REPORTED_SPLITS,
    TUNING_SPLITS,
    compare_to_reference,
    evaluate_campaigns,
    evaluate_over_splits,
)

MODELS = {
    "popularity": {},
    "item_logreg": {},
    "affinity_mlp": {},
    "pinterest_classifier": {},
    "pinterest_ensemble": {},
    "ensemble_paper": {"model": "pinterest_ensemble", "mode": "paper"},
}
MEMBERS = ["affinity_mlp", "pinterest_classifier"]  # the default ensemble's members, evaluated alone
METRICS = ["recall_at_5pct", "auc"]
BUCKETS = [50, 200]


def vs_best_member(per_campaign: pl.DataFrame, ensembles: list[str], members: list[str]) -> list[str]:
    """Markdown lines: each ensemble minus its best member (by mean recall@5%), both metrics, all buckets."""
    means = campaign_means(per_campaign).group_by("model").agg(pl.col(METRICS[0]).mean())
    score = dict(zip(means["model"], means[METRICS[0]]))
    best = max(members, key=lambda m: score.get(m, float("-inf")))
    keep = per_campaign.filter(pl.col("model").is_in([*ensembles, best]))
    table = compare_to_reference(keep, best, METRICS).filter(pl.col("model") != best)
    lines = [
        f"Best member: `{best}` (recall@5% {score[best]:.3f}).",
        "",
        "| ensemble | bucket | metric | mean | minus best member [95% CI] | wins/campaigns |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.sort("model", "metric", "seed_bucket").iter_rows(named=True):
        lines.append(
            f"| {r['model']} | {r['seed_bucket']} | {r['metric']} | {r['mean']:.3f} | {r['diff']:+.3f} "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['wins']}/{r['campaigns']} |"
        )
    return lines


def scope_rows(data, splits: list[int], scopes: list[str], params: dict) -> pl.DataFrame:
    """The ensemble fitted once per split and measured with its blend chosen per each ``scopes`` entry
    (campaign, bucket or all, optionally ``:min_gain``, e.g. ``all:0.01``): rows named
    ``pinterest_ensemble[scope=...]``."""
    frames = []
    for split_seed in splits:
        train, heldout = holdout_split(data.campaigns, data.n_users, 0.1, split_seed)
        scorer = build_scorer("pinterest_ensemble", params)
        start = time.perf_counter()
        scorer.fit(data, train)
        fit_seconds = time.perf_counter() - start
        for scope in scopes:
            where, _, gain = scope.partition(":")
            scorer.config = scorer.config.model_copy(update={"scope": where, "min_gain": float(gain or 0)})
            scorer.choice = scorer.make_choice()
            rows = evaluate_campaigns(scorer, data, train, heldout, audience_sizes(data.n_users, [0.05]), BUCKETS)
            frames.append(
                pl.DataFrame(rows).with_columns(
                    pl.lit(f"pinterest_ensemble[scope={scope}]").alias("model"),
                    pl.lit(split_seed).alias("split_seed"),
                    pl.lit(fit_seconds).alias("fit_seconds"),
                )
            )
    return pl.concat(frames, how="diagonal_relaxed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["movielens", "amazon"])
    parser.add_argument("--splits", default="reported", help="reported (0-4), tuning (100-104) or e.g. 0,1,2")
    parser.add_argument("--models", nargs="+", default=None, help="subset of the default models")
    parser.add_argument("--variants", default="{}", help='JSON name -> params of extra models ("model": scorer)')
    parser.add_argument(
        "--scopes",
        nargs="+",
        default=None,
        help="also the default ensemble, fitted once per "
        "split, with its blend chosen per campaign / bucket / all (for choosing the default scope)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--frames", type=Path, default=None, help="folder for the per-campaign rows (Parquet)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = {"reported": REPORTED_SPLITS, "tuning": TUNING_SPLITS}.get(args.splits) or [
        int(s) for s in args.splits.split(",")
    ]
    models = {k: v for k, v in MODELS.items() if not args.models or k in args.models}
    models = {"item_logreg": {}, **models, **json.loads(args.variants)}
    ensembles = [k for k, v in models.items() if v.get("model", k) == "pinterest_ensemble"]
    ensembles += [f"pinterest_ensemble[scope={s}]" for s in args.scopes or []]
    command = shlex.join(["python", "bench/classifier_ensemble.py", *sys.argv[1:]])
    out = [
        "# Per-campaign classifier and ensemble vs item_logreg and the ensemble's members",
        "",
        f"Command: `LOOKALIKE_DATA_ROOT=/work/shared/data {command}`; machine: {machine()}; one torch thread.",
        f"Split seeds {splits}; each campaign's metric is its mean over the splits; differences are paired over "
        "campaigns with a 95% bootstrap CI (2,000 resamples).",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.data:
            start = time.perf_counter()
            data = load_data(kind, Path(tmp))
            per_campaign = evaluate_over_splits(data, models, splits, fractions=[0.05], bucket_edges=BUCKETS)
            if args.scopes:
                per_campaign = pl.concat(
                    [per_campaign, scope_rows(data, splits, args.scopes, {})], how="diagonal_relaxed"
                )
            comparison = compare_to_reference(per_campaign, "item_logreg", METRICS)
            seconds = per_campaign.group_by("model").agg(
                pl.col("fit_seconds").mean(), pl.col("score_seconds").sum() / len(splits)
            )
            out += [
                *comparison_section(kind, data, per_campaign, comparison, METRICS[0], time.perf_counter() - start),
            ]
            if ensembles and all(m in models for m in MEMBERS):
                out += [
                    "Ensembles against their best member:",
                    "",
                    *vs_best_member(per_campaign, ensembles, MEMBERS),
                    "",
                ]
            out += [
                "Seconds per split (fit; scoring all campaigns):",
                "",
                "| model | fit s | score s |",
                "|---|---|---|",
            ]
            out += [
                f"| {r['model']} | {r['fit_seconds']:.1f} | {r['score_seconds']:.1f} |"
                for r in seconds.sort("model").iter_rows(named=True)
            ]
            out.append("")
            if args.frames:
                args.frames.mkdir(parents=True, exist_ok=True)
                per_campaign.write_parquet(args.frames / f"{kind}_{args.splits}.parquet")
            print("\n".join(out), flush=True)
    write_results(args.out, "\n".join(out))


if __name__ == "__main__":
    main()
