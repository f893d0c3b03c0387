"""MetaHeac where the paper claims its gain: new campaigns given only 5, 10 or 20 seeds.

    LOOKALIKE_DATA_ROOT=../shared/data .venv/bin/python bench/metaheac_few_seeds.py run \
        --dataset movielens --split-seeds 0,1,2,3,4 --tag main
    .venv/bin/python bench/metaheac_few_seeds.py report --tags main --out bench/results/metaheac.md

Data (MovieLens-100K, or Amazon Movies with Books+Movies history fields): 40 movies with 50-400 raters are
the evaluated **new campaigns**; ``--meta-pool`` other movies with >= 20 raters are ``meta_movie_*``
campaigns, the only tasks stage 1 sees (disjoint from the new campaigns). All campaign movies are kept out
of the user fields MetaHeac reads; only the new campaigns' own ratings are removed from the interactions
the reference peers read (the meta movies' ratings stay there as features: the peers see the same
information as plain features that MetaHeac sees as tasks).

Per split seed s and new campaign: a nested random draw of 5 / 10 / 20 of its raters are the seeds; every
other rater is a held-out positive, against as many sampled non-raters (fixed per s and campaign).
Metrics per campaign: AUC (held-out positives vs the sampled non-raters; GAUC = mean over campaigns) and
recall of the held-out positives in the top 5% of users (seeds excluded from the audience).
metaheac and joint_baseline are fitted once per split seed (model seed = s) on the meta campaigns; every
variant (``--variant name:key=value;key=value``, for each of ``--variant-models``) is one more fit.
Machine: 2-core x86_64, shared with other jobs; torch 1 thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from bench.common import data_source  # noqa: E402
from lookalike_models.adapters.options import AmazonOptions, MovieLensOptions  # noqa: E402
from lookalike_models.catalog import build_scorer  # noqa: E402
from lookalike_models.dataset import CampaignSeeds, LookalikeData  # noqa: E402
from lookalike_models.evaluation import HeldOut, audience_sizes, campaign_metrics  # noqa: E402
from lookalike_models.pipeline import score_campaign  # noqa: E402
from lookalike_models.protocol import paired_bootstrap_ci  # noqa: E402
from lookalike_models.sources import encode_source  # noqa: E402

RAW = Path("runs/metaheac_bench")
SEED_COUNTS = (5, 10, 20)
METAHEAC_FAMILY = ("metaheac", "joint_baseline", "scratch_baseline")


def load(
    dataset: str, workdir: Path, meta_pool: int, activity: bool = False, drop_meta_items: bool = False
) -> LookalikeData:
    campaigns = {"n_campaigns": 40, "n_meta_campaigns": meta_pool, "activity_feature": activity}
    # Amazon writes user fields (its Books and Movies histories, MetaHeac's input) only when asked.
    options = MovieLensOptions(**campaigns) if dataset == "movielens" else AmazonOptions(**campaigns, user_history=True)
    data = encode_source(data_source(dataset, adapter=options), workdir)
    # --drop-meta-items: the peers then read exactly the user information MetaHeac's fields hold.
    new_items = {c: i for c, i in data.campaign_items.items() if drop_meta_items or not c.startswith("meta_")}
    return data.without_campaign_leakage(new_items)


def few_seed_split(data: LookalikeData, cid: str, seed: int) -> tuple[dict[int, CampaignSeeds], HeldOut]:
    """Nested seed lists of each size in SEED_COUNTS and the held-out rest of the campaign (vs the 20)."""
    rng = np.random.default_rng([seed, zlib.crc32(cid.encode())])
    pos = rng.permutation(data.campaigns[cid].positives)
    pool = np.setdiff1d(np.arange(data.n_users), pos)
    held_pos = np.sort(pos[max(SEED_COUNTS) :])
    held_neg = np.sort(rng.choice(pool, min(held_pos.size, pool.size), replace=False))
    seeds = {n: CampaignSeeds(cid, np.sort(pos[:n])) for n in SEED_COUNTS}
    return seeds, HeldOut(held_pos, held_neg, True)


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    return name, {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in body.split(";") if kv)}


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    params = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in args.set)}
    variants = dict(parse_variant(v) for v in args.variant)
    with tempfile.TemporaryDirectory() as tmp:
        data = load(args.dataset, Path(tmp), args.meta_pool, args.activity, args.drop_meta_items)
    new = sorted(c for c in data.campaigns if not c.startswith("meta_"))
    meta_all = sorted(c for c in data.campaigns if c.startswith("meta_"))
    size = audience_sizes(data.n_users, [0.05])
    rows = []
    for s in (int(x) for x in args.split_seeds.split(",")):
        task_order = np.random.default_rng(s).permutation(len(meta_all))
        splits = {c: few_seed_split(data, c, s) for c in new}
        jobs = [(m, m, {}) for m in args.models.split(",") if m] + [
            (f"{m}[{k}]", m, v) for k, v in variants.items() for m in args.variant_models.split(",")
        ]
        for label, model, overrides in jobs:
            overrides = dict(overrides)  # "meta_tasks" (a bench key, not a model's): fewer stage-1 tasks
            meta = [meta_all[i] for i in np.sort(task_order[: overrides.pop("meta_tasks", args.meta_tasks)])]
            p = {**params, **overrides, "seed": s, "meta_campaigns": meta} if model in METAHEAC_FAMILY else {}
            if model == "scratch_baseline":
                p = {k: v for k, v in p.items() if k != "meta_campaigns"}
            scorer = build_scorer(model, p)
            start = time.perf_counter()
            if model in METAHEAC_FAMILY:
                scorer.fit(data, {c: data.campaigns[c] for c in meta})
            fit_s = time.perf_counter() - start
            for n in SEED_COUNTS:
                if model not in METAHEAC_FAMILY:
                    scorer.fit(data, {c: splits[c][0][n] for c in new})
                for cid in new:
                    seeds, held = splits[cid][0][n], splits[cid][1]
                    scored = score_campaign(scorer, data, seeds, max(size.values()))
                    m = campaign_metrics(scored.users, scored.candidates, scored.candidate_scores, held, size)
                    rows.append(
                        {
                            "dataset": args.dataset,
                            "tag": args.tag,
                            "model": label,
                            "split_seed": s,
                            "n_seeds": n,
                            "campaign_id": cid,
                            "auc": m["auc"],
                            "recall_at_5pct": m["recall_at_5pct"],
                            "fit_s": fit_s,
                            "meta_tasks": len(meta),
                        }
                    )
            print(
                args.dataset,
                s,
                label,
                f"fit {fit_s:.1f}s",
                "auc",
                round(float(np.mean([r["auc"] for r in rows if r["model"] == label and r["split_seed"] == s])), 4),
                flush=True,
            )
        RAW.mkdir(parents=True, exist_ok=True)  # after every split seed: a killed run keeps what it finished
        out = RAW / f"{args.dataset}_{args.tag}.parquet"
        pl.DataFrame(rows).write_parquet(out)
        (RAW / f"{args.dataset}_{args.tag}.json").write_text(json.dumps(vars(args)))
    print("wrote", out)


def report(args: argparse.Namespace) -> None:
    """Per data set (all given tags together): mean GAUC and recall@5% per model and seed count, then each
    model's paired difference to ``--reference`` per campaign (mean over the split seeds both ran), with a
    95% bootstrap CI over campaigns and the share of campaigns where it is ahead."""
    frames = [pl.read_parquet(p) for tag in args.tags.split(",") for p in sorted(RAW.glob(f"*_{tag}.parquet"))]
    df = pl.concat(frames, how="diagonal_relaxed")
    for tag, suffix in (x.split("=", 1) for x in args.suffix):  # tell apart one model run on other data
        df = df.with_columns(
            pl.when(pl.col("tag") == tag).then(pl.col("model") + suffix).otherwise(pl.col("model")).alias("model")
        )
    lines = []
    for (dataset,), part in df.group_by("dataset", maintain_order=True):
        lines += [
            f"### {dataset}: {part['campaign_id'].n_unique()} new campaigns\n",
            "| model | split seeds | meta tasks | stage-1 s | "
            + " | ".join(f"GAUC @{n}" for n in SEED_COUNTS)
            + " | "
            + " | ".join(f"recall@5% @{n}" for n in SEED_COUNTS)
            + " |",
            "|---|---|---|---|" + "---|" * (2 * len(SEED_COUNTS)),
        ]
        models = part["model"].unique(maintain_order=True).to_list()
        for model in models:
            mine = part.filter(pl.col("model") == model)
            seeds = ",".join(str(x) for x in sorted(mine["split_seed"].unique().to_list()))
            cells = [
                f"{mine.filter(pl.col('n_seeds') == n)[metric].mean():.4f}"
                for metric in ("auc", "recall_at_5pct")
                for n in SEED_COUNTS
            ]
            tasks = mine["meta_tasks"].max() if model.startswith(METAHEAC_FAMILY[:2]) else "-"
            lines.append(f"| {model} | {seeds} | {tasks} | {mine['fit_s'].mean():.0f} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Paired difference to {args.reference} (per campaign, mean over shared split seeds; "
            "95% bootstrap CI over campaigns; share of campaigns ahead):\n",
            "| model | seeds | GAUC diff [95% CI] | ahead | recall@5% diff [95% CI] | ahead |",
            "|---|---|---|---|---|---|",
        ]
        for model in models:
            if model == args.reference:
                continue
            for n in SEED_COUNTS:
                at_n = part.filter(pl.col("n_seeds") == n)
                paired = at_n.filter(pl.col("model") == model).join(
                    at_n.filter(pl.col("model") == args.reference), on=["split_seed", "campaign_id"], suffix="_ref"
                )
                if paired.height == 0:
                    continue
                cells = []
                for metric in ("auc", "recall_at_5pct"):
                    diff = (
                        paired.group_by("campaign_id")
                        .agg((pl.col(metric) - pl.col(f"{metric}_ref")).mean())[metric]
                        .drop_nans()
                        .to_numpy()
                    )
                    mean, lo, hi = paired_bootstrap_ci(diff)
                    cells += [f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]", f"{np.mean(diff > 0):.0%}"]
                lines.append(f"| {model} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", choices=["movielens", "amazon"], default="movielens")
    r.add_argument("--split-seeds", default="100,101,102,103,104")
    r.add_argument("--models", default="metaheac,joint_baseline,scratch_baseline,popularity")
    r.add_argument("--variant", action="append", default=[], help="extra configs: name:key=value;key=value")
    r.add_argument("--variant-models", default="metaheac", help="models each variant runs for")
    r.add_argument("--meta-pool", type=int, default=300, help="meta_movie_* campaigns built from the data")
    r.add_argument("--meta-tasks", type=int, default=300, help="of which stage 1 uses this many (per split seed)")
    r.add_argument("--set", action="append", default=[], help="MetaHeacConfig override key=value (YAML value)")
    r.add_argument("--activity", action="store_true", help="adapters' activity_feature (user fields only)")
    r.add_argument(
        "--drop-meta-items",
        action="store_true",
        help="also remove the meta movies' ratings from the interactions (the peers' input)",
    )
    r.add_argument("--tag", default="dev")
    p = sub.add_parser("report")
    p.add_argument("--tags", default="dev")
    p.add_argument("--reference", default="joint_baseline")
    p.add_argument("--suffix", action="append", default=[], help="tag=suffix appended to that tag's model names")
    p.add_argument("--out", default=None)
    args = ap.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
