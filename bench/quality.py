"""Held-out audience quality of every scorer against the reference peers, on real and synthetic data.

    LOOKALIKE_DATA_ROOT=/work/shared/data python bench/quality.py --splits reported \
        --out bench/results/quality.md
    python bench/quality.py --splits tuning --data movielens amazon --models item_logreg svd_centroid \
        --grid '{"item_logreg": {"C": [0.5, 1, 2, 4, 8]}}'      # choosing a default: tuning splits only

Protocol (``lookalike_models.protocol``): per split seed, 10% of each campaign's seeds held out plus as
many non-seeds; every model fitted on the rest; each campaign's metric averaged over the splits; each model
minus the reference (``--reference``, default ``item_logreg``) with a paired 95% bootstrap CI over
campaigns. ``--splits tuning`` (seeds 100-104) is where defaults are chosen; ``reported`` (0-4) is what
BENCHMARKS.md shows. Data: MovieLens-100K (40 movies as campaigns), the Amazon Books/Movies subset (40
Movies items as campaigns, Books activity as extra behaviour), the synthetic generator (20,000 users), and
derived shapes of the real sets (``bench.common.SHAPES``): ``movielens_longtail`` (300 users, every item
they touched: more items than users), ``amazon_longtail`` (500 users), ``movielens_nopop`` and
``amazon_nopop`` (each domain's 10% most-engaged items removed), ``movielens_sparse`` and ``amazon_sparse``
(half the users cut to 1-20 of their items: many sparse-history held-out seeds).

Besides each model, a virtual model ``champion``: on each split, the model the nightly would pick (highest
mean ``--metric`` over campaigns among the eligible models, ``SelectionConfig.not_eligible`` left out), its
per-campaign values compared with the reference like any model's. Recall is also reported by the held-out
seeds' organic activity (distinct non-campaign items: <= 5, 6-20, > 20).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import comparison_section, data_source, load_data, machine, write_results  # noqa: E402
from lookalike_models.config import SelectionConfig  # noqa: E402
from lookalike_models.evaluation import ACTIVITY_BUCKETS, is_activity_column, summarize  # noqa: E402
from lookalike_models.protocol import (  # noqa: E402
    REPORTED_SPLITS,
    TUNING_SPLITS,
    compare_to_reference,
    evaluate_over_splits,
)
from lookalike_models.selection import choose_champion  # noqa: E402
from lookalike_models.synthetic import SyntheticConfig  # noqa: E402

MODELS = {
    "random": {},
    "popularity": {},
    "item_logreg": {},
    "svd_centroid": {},
    "item_ridge": {},
    "minhash": {},
    "centroid_cosine": {},
    "lsh_density": {},
    "lsh_voting": {},
    "affinity_mlp": {},
    "pinterest_classifier": {},
    "pinterest_ensemble": {},
    "ralm": {"drop_fields": ["history"]},
    "ralm_average": {"drop_fields": ["history"]},
    "metaheac": {},
    "joint_baseline": {},
    "ptupcdr_hybrid": {},
}
# Models that need something only some data sets have: PTUPCDR bridges a source domain to the target one;
# MetaHeac's networks read user features (MovieLens' demographics, the generator's profile fields).
ONLY_ON = {
    "ptupcdr_hybrid": {"amazon"},
    "metaheac": {"movielens", "synthetic"},
    "joint_baseline": {"movielens", "synthetic"},
}
FRACTIONS = [0.01, 0.02, 0.05, 0.1]
BUCKETS = [50, 200]


def grid_models(models: dict[str, dict], grid: dict[str, dict[str, list]]) -> dict[str, dict]:
    """Expand ``{"item_logreg": {"C": [1, 4]}}`` into named variants, e.g. ``item_logreg[C=1]``."""
    out = {}
    for name, params in models.items():
        axes = grid.get(name)
        if not axes:
            out[name] = params
            continue
        for values in itertools.product(*axes.values()):
            variant = dict(zip(axes, values))
            label = ",".join(f"{k}={v}" for k, v in variant.items())
            out[f"{name}[{label}]"] = {"model": params.get("model", name), **params, **variant}
    return out


def bucket_table(comparison: pl.DataFrame, metric: str) -> str:
    part = comparison.filter((pl.col("metric") == metric) & (pl.col("seed_bucket") != "all"))
    buckets = sorted(set(part["seed_bucket"]))
    lines = ["| model | " + " | ".join(f"{b} seeds" for b in buckets) + " |", "|---" * (len(buckets) + 1) + "|"]
    for (model,), rows in part.sort("model").group_by(["model"], maintain_order=True):
        cell = {
            r["seed_bucket"]: f"{r['mean']:.3f} ({r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], "
            f"n={r['campaigns']})"
            for r in rows.iter_rows(named=True)
        }
        lines.append(f"| {model} | " + " | ".join(cell.get(b, "-") for b in buckets) + " |")
    return "\n".join(lines)


ACTIVITY_LABELS = {"act_le5": "<= 5 items", "act_6_20": "6-20 items", "act_gt20": "> 20 items"}
CHAMPION = "champion"


def champion_rows(
    per_campaign: pl.DataFrame, metric: str, not_eligible: list[str] | None = None
) -> tuple[pl.DataFrame, dict[int, str]]:
    """The nightly's pick on each split as a virtual model ``champion``: per split, the eligible model with
    the highest mean ``metric`` over that split's campaigns (``selection.choose_champion``, no current
    champion); its rows relabelled ``champion``. Returns (those rows, split seed -> picked model)."""
    not_eligible = SelectionConfig().not_eligible if not_eligible is None else not_eligible
    picks, parts = {}, []
    for (split,), frame in per_campaign.group_by(["split_seed"], maintain_order=True):
        means = frame.group_by("model").agg(pl.col(metric).mean())
        tonight = {m: float(v) for m, v in means.iter_rows() if m != CHAMPION and v is not None}
        eligible = {m for m in tonight if m not in not_eligible}
        if not eligible:
            continue
        picks[split] = choose_champion(tonight, None, 0.0, eligible).champion
        parts.append(frame.filter(pl.col("model") == picks[split]).with_columns(pl.lit(CHAMPION).alias("model")))
    empty = per_campaign.clear()
    return (pl.concat(parts, how="diagonal_relaxed") if parts else empty), dict(sorted(picks.items()))


def activity_metric(metric: str) -> str:
    """The recall whose activity buckets are reported: ``metric`` when it is a recall, else recall@5%."""
    return metric if metric.startswith("recall_at_") and not is_activity_column(metric) else "recall_at_5pct"


def activity_table(comparison: pl.DataFrame, metric: str, order: list[str] | None = None) -> str:
    """Per model (in ``order``, default by name) and activity bucket of the held-out seeds: mean recall over
    the campaigns with a held-out seed in the bucket, minus the reference on the same campaigns [95% CI],
    campaigns ("-" where no campaign had one)."""
    part = comparison.filter(pl.col("seed_bucket") == "all")
    header = " | ".join(f"{ACTIVITY_LABELS[b]}" for b in ACTIVITY_BUCKETS)
    lines = [f"| model | {header} |", "|---" * (len(ACTIVITY_BUCKETS) + 1) + "|"]
    for model in order or sorted(set(part["model"])):
        cells = []
        for bucket in ACTIVITY_BUCKETS:
            rows = part.filter((pl.col("model") == model) & (pl.col("metric") == f"{metric}_{bucket}"))
            r = rows.row(0, named=True) if rows.height else None
            if r is None or not r["campaigns"]:
                cells.append("-")
                continue
            cells.append(
                f"{r['mean']:.3f} ({r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], n={r['campaigns']})"
            )
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def held_out_seeds_by_activity(data, splits: list[int]) -> str:
    """Held-out seeds (all campaigns, all splits) per organic-activity bucket, e.g. '<= 5: 12, 6-20: 40, ...'."""
    import numpy as np

    from lookalike_models.evaluation import holdout_split

    activity = np.diff(data.user_items[0])
    counts = dict.fromkeys(ACTIVITY_BUCKETS, 0)
    for seed in splits:
        for held in holdout_split(data.campaigns, data.n_users, 0.1, seed)[1].values():
            seed_activity = activity[held.positives]
            for bucket, (low, high) in ACTIVITY_BUCKETS.items():
                counts[bucket] += int(((seed_activity >= low) & (seed_activity <= high)).sum())
    return ", ".join(f"{ACTIVITY_LABELS[b]}: {n}" for b, n in counts.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["movielens", "amazon", "synthetic"])
    parser.add_argument("--splits", default="reported", help="reported (0-4), tuning (100-104) or e.g. 0,1,2")
    parser.add_argument("--models", nargs="+", default=None, help="subset of the scorers (default: all)")
    parser.add_argument("--params", default="{}", help='JSON per model, e.g. {"item_logreg": {"C": 2}}')
    parser.add_argument("--grid", default="{}", help='JSON of value lists, e.g. {"item_logreg": {"C": [1, 4]}}')
    parser.add_argument("--reference", default="item_logreg")
    parser.add_argument("--metric", default="recall_at_5pct")
    parser.add_argument("--synthetic-users", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dump", type=Path, default=None, help="folder for each data set's per-campaign rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = {"reported": REPORTED_SPLITS, "tuning": TUNING_SPLITS}.get(args.splits) or [
        int(s) for s in args.splits.split(",")
    ]
    models = {k: v for k, v in MODELS.items() if not args.models or k in args.models}
    for name, params in json.loads(args.params).items():
        models[name] = {**models.get(name, {}), **params}
    models = grid_models(models, json.loads(args.grid))
    if args.reference not in models:
        models = {args.reference: MODELS.get(args.reference, {}), **models}
    command = " ".join(["python bench/quality.py", *sys.argv[1:]])
    out = [
        "# Audience quality: every scorer against the reference peers",
        "",
        f"Command: `LOOKALIKE_DATA_ROOT=/work/shared/data {command}`; machine: {machine()}; one torch thread.",
        f"Split seeds {splits}; each campaign's metric is its mean over the splits; differences are paired "
        f"over campaigns with a 95% bootstrap CI (2,000 resamples).",
        "",
    ]
    synthetic = SyntheticConfig(n_users=args.synthetic_users, n_campaigns=24, min_seeds=20, max_seeds=800)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.data:
            start = time.perf_counter()
            data = load_data(kind, Path(tmp), synthetic)
            base = data_source(kind).kind
            applicable = {k: v for k, v in models.items() if base in ONLY_ON.get(v.get("model", k), {base})}
            per_campaign = evaluate_over_splits(data, applicable, splits, fractions=FRACTIONS, bucket_edges=BUCKETS)
            champion, picks = champion_rows(per_campaign, args.metric)
            per_campaign = pl.concat([per_campaign, champion], how="diagonal_relaxed")
            if args.dump:  # to compare any two models afterwards (paired over campaigns)
                args.dump.mkdir(parents=True, exist_ok=True)
                per_campaign.write_parquet(args.dump / f"{kind}.parquet")
            metrics = [args.metric, "auc"]
            comparison = compare_to_reference(per_campaign, args.reference, metrics)
            by_activity = activity_metric(args.metric)
            activity_comparison = compare_to_reference(
                per_campaign, args.reference, [f"{by_activity}_{b}" for b in ACTIVITY_BUCKETS], by_bucket=False
            )
            seeds_per_bucket = held_out_seeds_by_activity(data, splits)
            summary = summarize(per_campaign).filter(pl.col("seed_bucket") == "all")
            ranked = summary.sort(args.metric, descending=True)["model"].to_list()
            sizes_columns = [c for c in summary.columns if c.startswith(("precision_at", "recall_at"))]
            seconds = per_campaign.group_by("model").agg(
                pl.col("fit_seconds").mean(), pl.col("score_seconds").sum() / len(splits)
            )
            out += [
                *comparison_section(kind, data, per_campaign, comparison, args.metric, time.perf_counter() - start),
                f"{args.metric} by seed-list bucket (mean, minus {args.reference} [95% CI], campaigns):",
                "",
                bucket_table(comparison, args.metric),
                "",
                f"{by_activity} by the held-out seeds' organic activity (distinct non-campaign items; mean over "
                f"campaigns with a held-out seed in the bucket, minus {args.reference} [95% CI], campaigns; "
                f"held-out seeds per bucket over the splits: {seeds_per_bucket}):",
                "",
                activity_table(activity_comparison, by_activity, ranked),
                "",
                f"{CHAMPION}: the nightly's pick per split (highest mean {args.metric}, "
                f"{'/'.join(SelectionConfig().not_eligible)} not eligible): "
                + ", ".join(f"split {s}: {m}" for s, m in picks.items()),
                "",
                "Other sizes (mean over campaigns):",
                "",
                "| model | " + " | ".join(sizes_columns) + " | fit s | score s |",
                "|---" * (len(sizes_columns) + 3) + "|",
            ]
            timing = {r["model"]: r for r in seconds.iter_rows(named=True)}
            for r in summary.sort(args.metric, descending=True).iter_rows(named=True):
                cells = [f"{r[c]:.3f}" for c in sizes_columns]
                t = timing[r["model"]]
                out.append(
                    f"| {r['model']} | " + " | ".join(cells) + f" | {t['fit_seconds']:.1f} | {t['score_seconds']:.1f} |"
                )
            out.append("")
            print("\n".join(out[-12 - len(summary) :]), flush=True)
    write_results(args.out, "\n".join(out))


if __name__ == "__main__":
    main()
