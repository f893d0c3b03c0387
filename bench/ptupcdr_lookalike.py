"""Look-alike on Amazon Books -> Movies where some converters never acted in Movies: recall@K with and
without PTUPCDR bridges.

    LOOKALIKE_DATA_ROOT=../shared/data python bench/ptupcdr_lookalike.py --cold-frac 0.3 --seeds 1 2 3

Campaigns: 40 movies with 50-400 raters (Amazon adapter), converters = raters, the movie's own ratings removed
(leakage). Per seed, ``--cold-frac`` of the users active in both domains lose *all* their Movies ratings: they
are cold in the target domain, with Books activity only. Seeds are split by the pipeline's holdout (20%
held out, sampled non-seeds); recall@K is reported over all held-out converters and over the cold ones only,
for ``ptupcdr_bridge`` with and without the bridge, and MinHash / popularity / random for reference.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lookalike_models.adapters import amazon
from lookalike_models.contract import read_dataset
from lookalike_models.dataset import encode
from lookalike_models.evaluation import HeldOut, audience_sizes, campaign_metrics, holdout_split, summarize
from lookalike_models.pipeline import remove_campaign_leakage, score_campaign
from lookalike_models.scorers import build_scorer

MODELS = {
    "ptupcdr_bridge": ("ptupcdr_bridge", {"use_bridge": True}),
    "ptupcdr_no_bridge": ("ptupcdr_bridge", {"use_bridge": False}),
    "ptupcdr_rating_bridge": ("ptupcdr_bridge", {"use_bridge": True, "objective": "rating"}),
    "ptupcdr_rating_no_bridge": ("ptupcdr_bridge", {"use_bridge": False, "objective": "rating"}),
    "minhash": ("minhash", {}),
    "popularity": ("popularity", {}),
    "random": ("random", {}),
}
FRACTIONS = [0.01, 0.02, 0.05, 0.1]


def cold_target_data(data, cold_frac: float, seed: int):
    """Copy of ``data`` where ``cold_frac`` of the overlapping users lose every target-domain interaction."""
    target = data.domains.index(amazon.TARGET_DOMAIN)
    source = data.domains.index(amazon.SOURCE_DOMAIN)
    overlap = np.intersect1d(np.unique(data.user_idx[data.domain == source]),
                             np.unique(data.user_idx[data.domain == target]))
    cold_users = np.random.default_rng(seed).permutation(overlap)[: int(round(cold_frac * overlap.size))]
    cold = np.zeros(data.n_users, bool)
    cold[cold_users] = True
    return data.without_interactions(~((data.domain == target) & cold[data.user_idx])), cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-frac", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--holdout-frac", type=float, default=0.2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        full = encode(read_dataset(amazon.build(Path(tmp) / "amazon")))
    full = remove_campaign_leakage(full, full.campaign_items)
    sizes = audience_sizes(full.n_users, FRACTIONS)
    rows = []
    for seed in args.seeds:
        data, cold = cold_target_data(full, args.cold_frac, seed)
        train, heldout = holdout_split(data.campaigns, data.n_users, args.holdout_frac, seed)
        parts = {"all_converters": heldout,
                 "cold_converters": {c: HeldOut(h.positives[cold[h.positives]], h.negatives, h.negatives_sampled)
                          for c, h in heldout.items() if cold[h.positives].any()}}
        for name, (model, params) in MODELS.items():
            scorer = build_scorer(model, params)
            start = time.perf_counter()
            scorer.fit(data, train)
            fit_seconds = time.perf_counter() - start
            for cid in heldout:
                scored = score_campaign(scorer, data, train[cid], max(sizes.values()))
                for part, split in parts.items():
                    if cid in split:
                        row = campaign_metrics(scored.users, scored.candidates, scored.candidate_scores,
                                               split[cid], sizes)
                        rows.append({**row, "model": name, "campaign_id": cid, "seed_bucket": part, "seed": seed,
                                     "fit_seconds": fit_seconds})
            print(f"seed {seed} {name}: fitted in {fit_seconds:.1f}s", flush=True)
        n_cold_held = sum(h.positives.size for h in parts["cold_converters"].values())
        n_held = sum(h.positives.size for h in heldout.values())
        print(f"seed {seed}: {int(cold.sum())} cold users, {n_cold_held} of {n_held} held-out converters cold")
    frame = pl.DataFrame(rows)
    # summarize() macro-averages per (model, bucket); the bucket here is the held-out part; its own 'all'
    # row (both parts pooled) is dropped.
    summary = summarize(frame).filter(pl.col("seed_bucket") != "all").rename({"seed_bucket": "held_out"})
    metrics = [f"recall_at_{k}" for k in sizes]
    header = "| held-out converters | model | " + " | ".join(f"recall@{k} ({v} users)" for k, v in sizes.items()) \
        + " | GAUC |"
    lines = [header, "|" + "---|" * (len(metrics) + 3)]
    for part in ("all_converters", "cold_converters"):
        for name in MODELS:
            r = summary.filter((pl.col("held_out") == part) & (pl.col("model") == name)).row(0, named=True)
            lines.append(f"| {part} | {name} | " + " | ".join(f"{r[m]:.3f}" for m in metrics) + f" | {r['gauc']:.3f} |")
    text = "\n".join(lines) + (f"\n\nCold fraction {args.cold_frac:.0%} of overlapping users, seeds {args.seeds} "
                               f"(macro-average over campaigns and seeds), holdout {args.holdout_frac:.0%}.\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
