"""MetaHeac vs the same network trained jointly and trained from scratch, on new hot and cold campaigns.

    LOOKALIKE_DATA_ROOT=../shared/data .venv/bin/python bench/metaheac_compare.py [--repeats 3] [--few 10]

Protocol (MetaHeac, KDD 2021, sec. 5): campaigns split 50/50 into meta-training campaigns and new (test)
campaigns; stage 1 sees only the meta-training campaigns' seeds. Each new campaign holds out
``--holdout`` of its seeds (plus as many non-seeds: labelled non-converters where the data has them,
otherwise sampled, flagged) and is adapted on the rest; new campaigns with at most ``--cold`` training
seeds are "cold". Metrics: pooled AUC over all held-out users of a group, GAUC (mean per-campaign AUC),
precision/recall of the held-out seeds in the top 5% of users. metaheac and joint_baseline get the same
stage-2 budget (``adapt_epochs``/``adapt_min_steps``); scratch starts from random weights and gets more
(``scratch_epochs``, ``scratch_lr``). "N seeds" rows score
the same new campaigns from only N of their training seeds (the few-seed regime meta-learning is for).
Repeated over ``--repeats`` seeds (model seed and campaign split), reported as mean (min-max).
Machine: 2-core CPU, shared; torch uses one thread.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lookalike_models.contract import read_dataset
from lookalike_models.dataset import CampaignSeeds, LookalikeData, encode
from lookalike_models.evaluation import audience_sizes, campaign_metrics, holdout_split, safe_auc
from lookalike_models.metaheac.training import campaign_kind
from lookalike_models.pipeline import remove_campaign_leakage, score_campaign
from lookalike_models.scorers import build_scorer
from lookalike_models.synthetic import SyntheticConfig, write_synthetic

MODELS = {"metaheac": "metaheac", "joint_baseline": "joint_baseline", "scratch_baseline": "scratch_baseline",
          "popularity": "popularity", "random": "random"}


def load(name: str, workdir: Path) -> LookalikeData:
    if name == "synthetic":
        cfg = SyntheticConfig(n_users=5000, n_items=1000, n_campaigns=60, min_seeds=15, max_seeds=400, seed=3)
        return encode(read_dataset(write_synthetic(cfg, workdir / "synthetic")))
    from lookalike_models.adapters import movielens, shared_data_root

    folder = movielens.build(workdir / "movielens", shared_data_root() / "movielens-100k", n_campaigns=80)
    data = encode(read_dataset(folder))
    return remove_campaign_leakage(data, data.campaign_items)


def few_seeds(seeds: CampaignSeeds, n: int, seed: int) -> CampaignSeeds:
    """The campaign as if it had only ``n`` seeds (and at most ``n`` labelled non-converters)."""
    rng = np.random.default_rng([seed, zlib.crc32(seeds.campaign_id.encode())])
    pick = np.sort(rng.choice(seeds.positives, min(n, seeds.size), replace=False))
    neg = np.sort(rng.choice(seeds.negatives, min(n, seeds.negatives.size), replace=False))
    return CampaignSeeds(seeds.campaign_id, pick, neg)


def run_once(data: LookalikeData, params: dict, holdout: float, cold: int, seed: int, few: int,
             only: tuple[str, ...] = tuple(MODELS)):
    train, heldout = holdout_split(data.campaigns, data.n_users, holdout, seed)
    names = sorted(heldout, key=lambda c: zlib.crc32(f"{seed}:{c}".encode()))
    meta_campaigns, new = names[: len(names) // 2], names[len(names) // 2:]
    size = audience_sizes(data.n_users, [0.05])
    rows, timing = [], {}
    for label, model in MODELS.items():
        if label not in only:
            continue
        p = {**params, "seed": seed, "meta_campaigns": meta_campaigns} if model in (
            "metaheac", "joint_baseline", "scratch_baseline") else {}
        scorer = build_scorer(model, p)
        start = time.perf_counter()
        scorer.fit(data, train)
        fit_s = time.perf_counter() - start
        for cid in new:
            held = heldout[cid]
            for kind, seeds in ((campaign_kind(train[cid].size, cold), train[cid]),
                                (f"{few} seeds", few_seeds(train[cid], few, seed))):
                scored = score_campaign(scorer, data, seeds, max(size.values()))
                row = campaign_metrics(scored.users, scored.candidates, scored.candidate_scores, held, size)
                lookup = dict(zip(scored.candidates.tolist(), scored.candidate_scores.tolist()))
                rows.append({**row, "model": label, "campaign_id": cid, "seed": seed, "kind": kind,
                             "sampled": held.negatives_sampled,
                             "pos_scores": [lookup.get(u, -np.inf) for u in held.positives.tolist()],
                             "neg_scores": [lookup.get(u, -np.inf) for u in held.negatives.tolist()]})
        if hasattr(scorer, "stats"):
            timing[label] = {"fit_s": fit_s, "samples_per_s": scorer.stats.samples_per_s,
                             "adapt_s": float(np.mean(list(scorer.adapt_seconds.values())))}
    return rows, timing


def order_throughput(data: LookalikeData, params: dict, steps: int = 30) -> dict[str, float]:
    """Stage-1 samples/s of first- vs second-order updates, measured back to back (first, second, first)
    so that load from other jobs on the shared machine hits both alike."""
    out: dict[str, list[float]] = {"first-order": [], "second-order": []}
    for second in (False, True, False):
        scorer = build_scorer("metaheac", {**params, "meta_steps": steps, "second_order": second})
        scorer.fit(data, data.campaigns)
        out["second-order" if second else "first-order"].append(scorer.stats.samples_per_s)
    return {k: float(np.mean(v)) for k, v in out.items()}


def summarize_groups(rows: list[dict]) -> pl.DataFrame:
    """Per (model, kind, seed): pooled AUC, GAUC, precision/recall at 5%; then mean (min-max) over seeds."""
    out = []
    frame = pl.DataFrame([{k: v for k, v in r.items() if k not in ("pos_scores", "neg_scores")} for r in rows])
    for kind in frame["kind"].unique().to_list() + ["all"]:
        for (model, seed), group in frame.group_by("model", "seed"):
            sel = [r for r in rows if r["model"] == model and r["seed"] == seed
                   and (r["kind"] == kind or (kind == "all" and r["kind"] in ("cold", "hot")))]
            if not sel:
                continue
            g = group.filter(pl.col("kind").is_in(["cold", "hot"]) if kind == "all" else pl.col("kind") == kind)
            pooled = safe_auc(np.concatenate([r["pos_scores"] for r in sel]),
                              np.concatenate([r["neg_scores"] for r in sel]))
            out.append({"model": model, "kind": kind, "seed": seed, "campaigns": g.height, "auc": pooled,
                        "gauc": g["auc"].mean(), "precision_at_5pct": g["precision_at_5pct"].mean(),
                        "recall_at_5pct": g["recall_at_5pct"].mean()})
    return pl.DataFrame(out)


def fmt(values: pl.Series) -> str:
    return f"{values.mean():.3f} ({values.min():.3f}-{values.max():.3f})" if values.len() > 1 else f"{values[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="movielens,synthetic")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--holdout", type=float, default=0.3)
    ap.add_argument("--meta-steps", type=int, default=300)
    ap.add_argument("--cold", type=str, default="movielens=100,synthetic=100",
                    help="cold threshold (training seeds) per data set")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--few", type=int, default=10, help="also score each new campaign from only this many seeds")
    ap.add_argument("--set", action="append", default=[], help="MetaHeacConfig override key=value (YAML value)")
    ap.add_argument("--out", default="bench/results/metaheac.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cold = {k: int(v) for k, v in (item.split("=") for item in args.cold.split(","))}
    import yaml

    params = {"meta_steps": args.meta_steps, **{k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in args.set)}}
    lines = ["# MetaHeac vs joint and scratch baselines on new campaigns\n",
             "```\n" + "LOOKALIKE_DATA_ROOT=../shared/data .venv/bin/python bench/metaheac_compare.py "
             f"--datasets {args.datasets} --repeats {args.repeats} --holdout {args.holdout} "
             f"--meta-steps {args.meta_steps} --cold {args.cold} --few {args.few}"
             + "".join(f" --set {x}" for x in args.set) + "\n```\n",
             "Machine: 2-core CPU, shared with other jobs; torch 1 thread. Model config: defaults of "
             f"`MetaHeacConfig` (dim 16, hidden 32, 8 experts, 5 critics, batch 256, 5 tasks/step, "
             f"inner SGD 0.05, outer Adam 1e-3, first-order) with meta_steps={args.meta_steps}; stage 2 for "
             "metaheac and joint: Adam 1e-3, max(2 epochs, 20 steps); scratch: Adam 1e-2, max(20 epochs, 20 steps). "
             "Overrides (--set) apply to all three. Values: mean (min-max) over the repeats.\n"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            data = load(name, Path(tmp))
            all_rows, timings = [], []
            for seed in range(args.repeats):
                rows, timing = run_once(data, params, args.holdout, cold[name], seed, args.few,
                                       args.models.split(","))
                all_rows += rows
                timings.append(timing)
                print(name, seed, {k: round(v["fit_s"], 1) for k, v in timing.items()}, flush=True)
            table = summarize_groups(all_rows)
            agg = (table.group_by("model", "kind").agg(
                pl.format("{}-{}", pl.col("campaigns").min(), pl.col("campaigns").max()).alias("campaigns"),
                *[pl.col(m).map_batches(lambda s: pl.Series([fmt(s)]), returns_scalar=True).alias(m)
                  for m in ("auc", "gauc", "precision_at_5pct", "recall_at_5pct")])
                .sort("kind", "model"))
            sampled = any(r["sampled"] for r in all_rows)
            lines.append(f"## {name}: {data.n_users} users, {len(data.campaigns)} campaigns; half meta-train, "
                         f"half new; cold = at most {cold[name]} training seeds; held-out negatives "
                         f"{'sampled non-seeds' if sampled else 'labelled non-converters'}\n")
            lines.append("| model | new campaigns | n per repeat | AUC (pooled) | GAUC | precision@5% | recall@5% |")
            lines.append("|---|---|---|---|---|---|---|")
            for r in agg.iter_rows(named=True):
                lines.append(f"| {r['model']} | {r['kind']} | {r['campaigns']} | {r['auc']} | {r['gauc']} | "
                             f"{r['precision_at_5pct']} | {r['recall_at_5pct']} |")
            orders = order_throughput(data, params)
            lines.append("\n| model | stage-1 seconds | stage-1 samples/s | adaptation s/campaign |")
            lines.append("|---|---|---|---|")
            for label in [m for m in ("metaheac", "joint_baseline", "scratch_baseline") if m in timings[0]]:
                fit = np.mean([t[label]["fit_s"] for t in timings])
                sps = np.mean([t[label]["samples_per_s"] for t in timings])
                ad = np.mean([t[label]["adapt_s"] for t in timings])
                lines.append(f"| {label} | {fit:.1f} | {'-' if np.isnan(sps) else f'{sps:,.0f}'} | {ad:.3f} |")
            for order, sps in orders.items():
                lines.append(f"| metaheac stage 1, {order} (30 steps, measured back to back) | | {sps:,.0f} | |")
            lines.append("")
            print("\n".join(lines[-(agg.height + 10):]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
