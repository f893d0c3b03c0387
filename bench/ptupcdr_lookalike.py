"""Look-alike on Amazon Books -> Movies where some converters never acted in Movies: recall@K of PTUPCDR
bridges, of hybrids (a warm scorer for users with Movies activity + bridges for the others) and references.

    LOOKALIKE_DATA_ROOT=../shared/data python bench/ptupcdr_lookalike.py --cold-frac 0.3 --seeds 1 2 3

Campaigns: 40 movies with 50-400 raters (Amazon adapter), converters = raters, the movie's own ratings removed
(leakage). Per split seed, ``--cold-frac`` of the users active in both domains lose *all* their Movies
ratings: they are cold in the target domain, with Books activity only. Seeds are split by the pipeline's
holdout (20% held out, sampled non-seeds); recall@K over all held-out converters, the warm ones and the cold
ones. ``ptupcdr_hybrid_*``: ``ptupcdr_hybrid`` over the fitted bridge and warm scorer, its
``cold_share_scale`` chosen per split seed on an inner cut of the training seeds (``choose_scale``). Paired
95% CIs of the hybrids against the references over (seed, campaign) pairs. Split seed 0 is left out of
reports: the bridge's implicit defaults were picked on it.
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
from lookalike_models.catalog import build_scorer
from lookalike_models.contract import read_dataset
from lookalike_models.dataset import encode
from lookalike_models.evaluation import HeldOut, audience_sizes, campaign_metrics, holdout_split, summarize
from lookalike_models.pipeline import score_campaign
from lookalike_models.protocol import compare_to_reference, format_comparison
from lookalike_models.ptupcdr.hybrid import PTUPCDRHybridScorer, interleave_keys
from lookalike_models.scorers import top_k

# name -> (registered scorer, params); the hybrids are assembled from the fitted bridge and warm scorers.
MODELS = {
    "ptupcdr_bridge": ("ptupcdr_bridge", {"use_bridge": True}),
    "ptupcdr_no_bridge": ("ptupcdr_bridge", {"use_bridge": False}),
    "minhash": ("minhash", {}),
    "item_logreg": ("item_logreg", {}),
    "popularity": ("popularity", {}),
}
# name -> (warm scorer, how source-only users are ranked)
HYBRIDS = {
    "ptupcdr_hybrid_minhash": ("minhash", "bridge"),
    "ptupcdr_hybrid_item_logreg": ("item_logreg", "bridge"),
    "ptupcdr_hybrid_item_logreg_mixed": ("item_logreg", "bridge+warm"),
}
SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)  # cold_share_scale grid, chosen on an inner cut of the training seeds
FRACTIONS = [0.01, 0.02, 0.05, 0.1]
SELECT_ON = "recall_at_5pct"


def cold_target_data(data, cold_frac: float, seed: int):
    """Copy of ``data`` where ``cold_frac`` of the overlapping users lose every target-domain interaction."""
    target = data.domains.index(amazon.TARGET_DOMAIN)
    source = data.domains.index(amazon.SOURCE_DOMAIN)
    overlap = np.intersect1d(
        np.unique(data.user_idx[data.domain == source]), np.unique(data.user_idx[data.domain == target])
    )
    cold_users = np.random.default_rng(seed).permutation(overlap)[: int(round(cold_frac * overlap.size))]
    cold = np.zeros(data.n_users, bool)
    cold[cold_users] = True
    return data.without_interactions(~((data.domain == target) & cold[data.user_idx])), cold


def keyed_audience(keys: np.ndarray, size: int):
    """(audience best first, candidates, scores) from merged rank keys (lower = better, inf = not ranked)."""
    candidates = np.flatnonzero(np.isfinite(keys))
    scores = (-keys[candidates]).astype(np.float32)
    return top_k(candidates, scores, size)[0], candidates, scores


def choose_scale(hybrid: PTUPCDRHybridScorer, data, train: dict, sizes: dict, seed: int) -> tuple[float, dict]:
    """cold_share_scale with the best mean ``SELECT_ON`` on an inner cut of the training seeds (20% of each
    campaign's training seeds held out; the reported held-out seeds are never seen)."""
    inner_train, inner_held = holdout_split(train, data.n_users, 0.2, seed + 1000)
    per_scale: dict[float, list[float]] = {s: [] for s in SCALES}
    for cid, held in inner_held.items():
        seeds = inner_train[cid]
        orders = hybrid.group_orders(data, seeds)
        base = hybrid.cold_share(seeds) / hybrid.config.cold_share_scale
        for scale in SCALES:
            keys = interleave_keys(*orders, min(1.0, scale * base), data.n_users)
            audience, candidates, scores = keyed_audience(keys, max(sizes.values()))
            per_scale[scale].append(campaign_metrics(audience, candidates, scores, held, sizes)[SELECT_ON])
    means = {s: float(np.mean(v)) for s, v in per_scale.items()}
    return max(means, key=means.get), means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-frac", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--holdout-frac", type=float, default=0.2)
    parser.add_argument("--models", nargs="+", default=list(MODELS) + list(HYBRIDS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--frame-out", type=Path, help="per-campaign rows as Parquet")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        full = encode(read_dataset(amazon.build(Path(tmp) / "amazon")))
    full = full.without_campaign_leakage()
    sizes = audience_sizes(full.n_users, FRACTIONS)
    rows, chosen = [], []
    for seed in args.seeds:
        data, cold = cold_target_data(full, args.cold_frac, seed)
        train, heldout = holdout_split(data.campaigns, data.n_users, args.holdout_frac, seed)
        parts = {
            "all_converters": heldout,
            "cold_converters": {
                c: HeldOut(h.positives[cold[h.positives]], h.negatives, h.negatives_sampled)
                for c, h in heldout.items()
                if cold[h.positives].any()
            },
            "warm_converters": {
                c: HeldOut(h.positives[~cold[h.positives]], h.negatives, h.negatives_sampled)
                for c, h in heldout.items()
                if (~cold[h.positives]).any()
            },
        }
        fitted = {}
        needed = {m for m in args.models if m in MODELS} | {HYBRIDS[m][0] for m in args.models if m in HYBRIDS}
        if any(m in HYBRIDS for m in args.models):
            needed.add("ptupcdr_bridge")
        for name in [m for m in MODELS if m in needed]:
            scorer = build_scorer(*MODELS[name])
            start = time.perf_counter()
            if name == "ptupcdr_no_bridge" and "ptupcdr_bridge" in fitted:
                # The same fit with the bridged users switched off: no second training.
                scorer.__dict__.update({k: v for k, v in fitted["ptupcdr_bridge"].__dict__.items() if k != "config"})
                scorer._set_vectors()
            else:
                scorer.fit(data, train)
            fitted[name] = scorer
            print(f"seed {seed} {name}: fitted in {time.perf_counter() - start:.1f}s", flush=True)
        for name, (warm, cold_ranking) in HYBRIDS.items():
            if name in args.models:
                hybrid = PTUPCDRHybridScorer.from_fitted(
                    {"warm_model": warm, "cold_ranking": cold_ranking}, fitted["ptupcdr_bridge"], fitted[warm]
                )
                scale, means = choose_scale(hybrid, data, train, sizes, seed)
                hybrid.config.cold_share_scale = scale
                fitted[name] = hybrid
                chosen.append(
                    {
                        "seed": seed,
                        "model": name,
                        "scale": scale,
                        **{f"inner_{SELECT_ON}_at_{s}": v for s, v in means.items()},
                    }
                )
                print(
                    f"seed {seed} {name}: scale {scale} on the inner cut "
                    + ", ".join(f"{s}: {v:.3f}" for s, v in means.items()),
                    flush=True,
                )
        for name in args.models:
            scorer = fitted[name]
            for cid in heldout:
                scored = score_campaign(scorer, data, train[cid], max(sizes.values()))
                for part, split in parts.items():
                    if cid in split:
                        row = campaign_metrics(
                            scored.users, scored.candidates, scored.candidate_scores, split[cid], sizes
                        )
                        rows.append(
                            {
                                **row,
                                "model": name,
                                "campaign_id": cid,
                                "held_out": part,
                                "seed_bucket": "all",
                                "split_seed": seed,
                            }
                        )
        n_cold_held = sum(h.positives.size for h in parts["cold_converters"].values())
        n_held = sum(h.positives.size for h in heldout.values())
        print(
            f"seed {seed}: {int(cold.sum())} cold users, {n_cold_held} of {n_held} held-out converters cold", flush=True
        )
    frame = pl.DataFrame(rows)
    if args.frame_out:
        frame.write_parquet(args.frame_out)
    text = results_table(frame, args, sizes) + "\n" + paired_table(frame, args) + "\n" + scales_table(chosen)
    print(text)
    if args.out:
        args.out.write_text(text)


def results_table(frame: pl.DataFrame, args: argparse.Namespace, sizes: dict) -> str:
    """Per held-out part: summarize() (each campaign's mean over split seeds, then the mean over campaigns)."""
    metrics = [f"recall_at_{k}" for k in sizes]
    header = (
        "| held-out converters | model | "
        + " | ".join(f"recall@{k} ({v} users)" for k, v in sizes.items())
        + " | GAUC |"
    )
    lines = [header, "|" + "---|" * (len(metrics) + 3)]
    for part in ("all_converters", "warm_converters", "cold_converters"):
        summary = summarize(frame.filter(pl.col("held_out") == part)).filter(pl.col("seed_bucket") == "all")
        for name in args.models:
            r = summary.filter(pl.col("model") == name)
            if r.height:
                r = r.row(0, named=True)
                lines.append(
                    f"| {part} | {name} | " + " | ".join(f"{r[m]:.3f}" for m in metrics) + f" | {r['gauc']:.3f} |"
                )
    return "\n".join(lines) + (
        f"\n\nCold fraction {args.cold_frac:.0%} of overlapping users, split seeds "
        f"{args.seeds} (each campaign's mean over splits, then the mean over campaigns), "
        f"holdout {args.holdout_frac:.0%}.\n"
    )


def paired_table(frame: pl.DataFrame, args: argparse.Namespace) -> str:
    """All held-out converters: every model against each reference, paired bootstrap 95% CI over campaigns
    (each campaign's mean over the split seeds), ``lookalike_models.protocol``'s comparison."""
    part = frame.filter(pl.col("held_out") == "all_converters")
    out = []
    for ref in [m for m in ("item_logreg", "minhash") if m in args.models]:
        comparison = compare_to_reference(part, ref, ["recall_at_5pct", "recall_at_10pct"], by_bucket=False)
        for metric in ("recall_at_5pct", "recall_at_10pct"):
            out.append(format_comparison(comparison, metric))
    return "\n\n".join(out) + "\n"


def scales_table(chosen: list[dict]) -> str:
    if not chosen:
        return ""
    lines = ["| split seed | hybrid | cold_share_scale chosen on the inner cut |", "|---|---|---|"]
    lines += [f"| {c['seed']} | {c['model']} | {c['scale']} |" for c in chosen]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
