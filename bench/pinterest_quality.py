"""Held-out precision/recall@K of the Pinterest act-alike scorers vs the baselines, by seed-list bucket.

    LOOKALIKE_DATA_ROOT=/work/shared/data python bench/pinterest_quality.py --sweep --campaigns 24 \
        --out bench/results/pinterest_quality.md

Protocol: ``evaluate_scorers`` (Pinterest's offline protocol: 10% of each campaign's seeds held out plus as
many non-seeds, fit on the rest, rank every user). Data: MovieLens-100K (40 movie campaigns, the movies'
own ratings removed) and the synthetic set (20,000 users, ``--campaigns`` campaigns of 20-800 seeds).
The StarSpace encoder is trained once per data set and shared by every embedding scorer
(``shared_encoder``). ``--sweep`` also measures ensembles with other members and embedding shares,
which is what the ensemble's defaults come from.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from lookalike_models.contract import read_dataset
from lookalike_models.dataset import encode
from lookalike_models.evaluation import summarize
from lookalike_models.protocol import evaluate_scorers
from lookalike_models.synthetic import SyntheticConfig, write_synthetic

MODELS = {
    "random": {}, "popularity": {}, "minhash": {}, "centroid_cosine": {}, "lsh_density": {}, "lsh_voting": {},
    "affinity_mlp": {}, "classifier": {"model": "pinterest_classifier"}, "ensemble": {"model": "pinterest_ensemble"},
}
FRACTIONS = [0.01, 0.02, 0.05, 0.1]
BUCKETS = [50, 200]


def load(name: str, tmp: Path, synthetic_users: int, campaigns: int):
    if name == "movielens":
        from lookalike_models.adapters import movielens

        data = encode(read_dataset(movielens.build(tmp / "movielens")))
        return data.without_campaign_leakage()
    cfg = SyntheticConfig(n_users=synthetic_users, n_campaigns=campaigns, min_seeds=20, max_seeds=800)
    return encode(read_dataset(write_synthetic(cfg, tmp / "synthetic")))


def table(summary: pl.DataFrame, metric: str) -> str:
    cols = [f"{metric}_at_{f * 100:g}pct".replace(".", "_") for f in FRACTIONS]
    head = "| model | bucket | campaigns | " + " | ".join(c.replace(f"{metric}_at_", "@") for c in cols) + " | GAUC |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for r in summary.sort("seed_bucket", "model").iter_rows(named=True):
        lines.append(f"| {r['model']} | {r['seed_bucket']} | {r['campaigns']} | "
                     + " | ".join(f"{r[c]:.3f}" for c in cols) + f" | {r['gauc']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", nargs="+", default=["movielens", "synthetic"])
    parser.add_argument("--synthetic-users", type=int, default=20_000)
    parser.add_argument("--campaigns", type=int, default=12)
    parser.add_argument("--sweep", action="store_true", help="also ensemble with fixed embedding shares")
    parser.add_argument("--models", default=None, help="comma-separated subset of the models (sweep kept)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = dict(MODELS)
    if args.sweep:
        # (embedding member, embedding share at <= small_seeds, share at >= large_seeds)
        for member, small, large in [("lsh_density", 0.2, 0.2), ("lsh_density", 0.8, 0.8), ("lsh_density", 0.7, 0.3),
                                     ("affinity_mlp", 0.2, 0.2), ("affinity_mlp", 0.7, 0.3),
                                     ("affinity_mlp", 0.5, 0.2)]:
            models[f"ens_{member.split('_')[0]}_{small}to{large}"] = {
                "model": "pinterest_ensemble", "embedding_model": member, "embedding_share_small": small,
                "embedding_share_large": large}
    if args.models:
        models = {k: v for k, v in models.items() if k in args.models.split(",") or k.startswith("ens_")}
    out = ["# Pinterest act-alike: held-out quality", "",
           "Command: `LOOKALIKE_DATA_ROOT=/work/shared/data python bench/pinterest_quality.py"
           + (" --sweep" if args.sweep else "") + f" --campaigns {args.campaigns}`; "
           "machine: 2-core CPU, shared; one torch thread.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.data:
            start = time.perf_counter()
            data = load(name, Path(tmp), args.synthetic_users, args.campaigns)
            per_campaign = evaluate_scorers(data, models, fractions=FRACTIONS, bucket_edges=BUCKETS)
            summary = summarize(per_campaign)
            fit = per_campaign.group_by("model").agg(pl.col("fit_seconds").first(), pl.col("score_seconds").sum())
            out += [f"## {name}: {data.n_users} users, {data.n_items} items, {per_campaign['campaign_id'].n_unique()} "
                    f"evaluated campaigns ({time.perf_counter() - start:.0f} s)", "",
                    "Precision (share of the audience that are held-out seeds):", "", table(summary, "precision"), "",
                    "Recall (share of held-out seeds in the audience):", "", table(summary, "recall"), "",
                    "Seconds (fit includes the shared StarSpace training for the first embedding model):", "",
                    "| model | fit s | score s (all campaigns) |", "|---|---|---|"]
            out += [f"| {r['model']} | {r['fit_seconds']:.1f} | {r['score_seconds']:.1f} |"
                    for r in fit.sort("model").iter_rows(named=True)]
            out.append("")
            print("\n".join(out[-40:]), flush=True)
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
