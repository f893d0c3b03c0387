"""Do the learned user embeddings (StarSpace, RALM) beat TruncatedSVD user factors? Issue 10, item 4.

    LOOKALIKE_DATA_ROOT=/work/shared/data python bench/embeddings_quality.py --splits 0 1 2 3 4 \
        --out bench/results/embeddings.md
    LOOKALIKE_DATA_ROOT=/work/shared/data python bench/embeddings_quality.py --splits 0 1 2 3 4 \
        --groups ralm,ralm_ablation --out bench/results/ralm_embeddings.md

Protocol: ``evaluate_scorers`` (10% of each campaign's seeds held out plus as many non-seeds, fit on the
rest, rank every user) repeated over split seeds; every scorer sees the same splits. Reported: mean
recall@5% and GAUC over (campaign, split), and the paired 95% bootstrap CI over campaigns of each
scorer minus ``svd_centroid`` (per campaign, the mean over splits of the difference). Defaults were
chosen on split seeds 100-104 only (``--splits 100 101 102 103 104``); report seeds 0-4.
Data: MovieLens-100K (40 movie campaigns) and the Amazon Books+Movies dense subset (40 Movies campaigns),
each campaign's own item removed from the organic data.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from bench.common import load_data
from lookalike_models.protocol import compare_to_reference, evaluate_over_splits

# The encoder before issue 10 (its old defaults), kept as the "before" arm of the ablation.
BEFORE = {
    "dim": 32,
    "history_len": 200,
    "history_weighting": "none",
    "init": "random",
    "negatives": 10,
    "negative_power": 0.0,
    "share_embeddings": False,
    "dense_bias": True,
    "positives_per_user": 8,
    "lr": 0.02,
    "batch_users": 512,
    "max_epochs": 15,
    "patience": 2,
    "min_improvement": 1e-4,
    "fold_in_proxy_items": False,
}
# Today's training from a random item table: what StarSpace learns without the SVD warm start.
RANDOM_INIT = {"init": "random", "lr": 0.01, "max_epochs": 30, "patience": 30}
# RALM's phase-1 user embeddings scored by cosine to the seeds' centroid (no look-alike phase).
RALM_CENTROID_COSINE = {"model": "ralm_average", "transform": False, "lookalike_epochs": 0}
# The RALM user model before issue 10 (its old defaults): the "before" arm of the RALM ablation.
RALM_BEFORE = {
    "dim": 32,
    "field_dim": 32,
    "max_history": 50,
    "history_weighting": "mean",
    "drop_fields": [],
    "init": "random",
    "residual": False,
    "tie_items": False,
    "item_bias": False,
    "center_embeddings": False,
    "logq_correction": False,
    "user_epochs": 3,
    "early_stopping": "none",
    "user_lr": 0.005,
}
# Groups of models that share one StarSpace encoder: a group is evaluated over all splits before the next,
# so the per-process encoder cache trains each encoder once per data set.
GROUPS = {
    "references": {"svd_centroid": {}, "popularity": {}},
    "starspace": {"centroid_cosine": {}, "lsh_density": {}, "affinity_mlp": {}},
    "starspace_random_init": {"centroid_cosine_random_init": {"model": "centroid_cosine", "encoder": RANDOM_INIT}},
    "starspace_before": {
        "centroid_cosine_before": {"model": "centroid_cosine", "encoder": BEFORE},
        "lsh_density_before": {"model": "lsh_density", "encoder": BEFORE},
        "affinity_mlp_before": {"model": "affinity_mlp", "encoder": BEFORE},
    },
    "ralm": {"ralm_centroid_cosine": RALM_CENTROID_COSINE, "ralm_average": {}, "ralm": {}},
    # Which change mattered for RALM: each arm is today's defaults with one thing reverted (or all of them).
    "ralm_ablation": {
        "ralm_cc_before": {**RALM_CENTROID_COSINE, **RALM_BEFORE},
        "ralm_cc_no_svd_start": {**RALM_CENTROID_COSINE, "init": "random", "residual": False},
        "ralm_cc_untrained": {**RALM_CENTROID_COSINE, "user_epochs": 0},
        "ralm_cc_stop_on_interactions": {**RALM_CENTROID_COSINE, "early_stopping": "interactions"},
        "ralm_cc_not_centered": {**RALM_CENTROID_COSINE, "center_embeddings": False},
        "ralm_average_relu": {"model": "ralm_average", "transform_activation": "relu"},
        "ralm_average_h32": {"model": "ralm_average", "transform_dim": 32},
    },
}
METRIC = "recall_at_5pct"


def table(rows: pl.DataFrame, reference: str = "svd_centroid") -> str:
    comparison = compare_to_reference(rows, reference, [METRIC, "auc"], by_bucket=False)
    auc = {r["model"]: r["mean"] for r in comparison.filter(pl.col("metric") == "auc").iter_rows(named=True)}
    lines = [f"| scorer | recall@5% | GAUC | recall@5% minus {reference} [95% CI] | wins |", "|---|---|---|---|---|"]
    for r in comparison.filter(pl.col("metric") == METRIC).sort("mean", descending=True).iter_rows(named=True):
        ci = "" if r["model"] == reference else f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        wins = "" if r["model"] == reference else f"{r['wins']}/{r['campaigns']}"
        lines.append(f"| {r['model']} | {r['mean']:.3f} | {auc[r['model']]:.3f} | {ci} | {wins} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", nargs="+", default=["movielens", "amazon"])
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--groups", default=None, help="comma-separated subset of GROUPS")
    parser.add_argument("--extra", default=None, help='JSON {name: {"model": ..., params...}}: one more group')
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rows", type=Path, default=None, help="write per-campaign rows (parquet prefix)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # The reference is always measured: every table is a paired comparison with it.
    groups = {k: v for k, v in GROUPS.items() if k == "references" or not args.groups or k in args.groups.split(",")}
    if args.extra:
        groups["extra"] = json.loads(args.extra)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.data:
            data = load_data(kind, Path(tmp))
            start = time.perf_counter()
            rows = pl.concat(
                [evaluate_over_splits(data, models, args.splits) for models in groups.values()], how="diagonal_relaxed"
            )
            if args.rows:
                rows.write_parquet(f"{args.rows}_{kind}.parquet")
            text = (
                f"### {kind}: {data.n_users} users, {data.n_items} items, {len(data.campaigns)} campaigns, "
                f"split seeds {args.splits} ({time.perf_counter() - start:.0f} s)\n\n{table(rows)}\n"
            )
            print(text, flush=True)
            out.append(text)
    if args.out:
        args.out.write_text("\n".join(out))


if __name__ == "__main__":
    main()
