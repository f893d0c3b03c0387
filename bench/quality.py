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
Movies items as campaigns, Books activity as extra behaviour), the synthetic generator (20,000 users).
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

from bench.common import comparison_section, load_data, machine, write_results  # noqa: E402
from lookalike_models.evaluation import summarize  # noqa: E402
from lookalike_models.protocol import (  # noqa: E402
    REPORTED_SPLITS,
    TUNING_SPLITS,
    compare_to_reference,
    evaluate_over_splits,
)
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
            applicable = {k: v for k, v in models.items() if kind in ONLY_ON.get(v.get("model", k), {kind})}
            per_campaign = evaluate_over_splits(data, applicable, splits, fractions=FRACTIONS, bucket_edges=BUCKETS)
            metrics = [args.metric, "auc"]
            comparison = compare_to_reference(per_campaign, args.reference, metrics)
            summary = summarize(per_campaign).filter(pl.col("seed_bucket") == "all")
            seconds = per_campaign.group_by("model").agg(
                pl.col("fit_seconds").mean(), pl.col("score_seconds").sum() / len(splits)
            )
            out += [
                *comparison_section(kind, data, per_campaign, comparison, args.metric, time.perf_counter() - start),
                f"{args.metric} by seed-list bucket (mean, minus {args.reference} [95% CI], campaigns):",
                "",
                bucket_table(comparison, args.metric),
                "",
                "Other sizes (mean over campaigns):",
                "",
                "| model | "
                + " | ".join(c for c in summary.columns if c.startswith(("precision_at", "recall_at")))
                + " | fit s | score s |",
                "|---" * (len([c for c in summary.columns if c.startswith(("precision_at", "recall_at"))]) + 3) + "|",
            ]
            timing = {r["model"]: r for r in seconds.iter_rows(named=True)}
            for r in summary.sort(args.metric, descending=True).iter_rows(named=True):
                cells = [f"{r[c]:.3f}" for c in summary.columns if c.startswith(("precision_at", "recall_at"))]
                t = timing[r["model"]]
                out.append(
                    f"| {r['model']} | " + " | ".join(cells) + f" | {t['fit_seconds']:.1f} | {t['score_seconds']:.1f} |"
                )
            out.append("")
            print("\n".join(out[-12:]), flush=True)
    write_results(args.out, "\n".join(out))


if __name__ == "__main__":
    main()
