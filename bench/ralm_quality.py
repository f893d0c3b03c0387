"""RALM quality on MovieLens-100K: RALM vs RALM-average, attention merge vs concat, centroid cosine.

    LOOKALIKE_DATA_ROOT=../shared/data python bench/ralm_quality.py --repeats 1 --out bench/results/ralm_quality.md

Each movie with 50-400 raters is a campaign (its raters the converters, its own ratings removed before
training); 10% of each campaign's seeds are held out with as many sampled non-raters. Every model is fitted
on the training seeds and scores all users for every campaign. Reported (mean over ``--repeats`` splits):
GAUC (mean per-campaign AUC), precision/recall of held-out seeds at audience sizes, and RALM's user-centric
prec@K (per user with a held-out seed, rank the campaigns they are not a training seed of). "centroid
cosine" is cosine to the mean of the seeds' phase-1 embeddings, with no look-alike training.
The user model drops the adapter's ``history`` field and uses its own item-history field instead, so the
item being predicted in phase 1 can be masked out of the input.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from bench.common import data_source, load_data, load_source  # noqa: E402
from lookalike_models.catalog import build_scorer  # noqa: E402
from lookalike_models.evaluation import (  # noqa: E402
    audience_sizes,
    campaign_metrics,
    holdout_split,
    seed_bucket,
    summarize,
    user_precision_at_k,
)
from lookalike_models.pipeline import score_campaign  # noqa: E402
from lookalike_models.synthetic import SyntheticConfig  # noqa: E402

# MovieLens is small (943 users, 40 campaigns): more passes than the defaults (tuned on 20k synthetic users).
MOVIELENS = {"drop_fields": ["history"], "user_epochs": 10, "lookalike_epochs": 100}


def model_grid(base: dict) -> dict[str, dict]:
    return {
        "ralm (merge)": {"model": "ralm", **base},
        "ralm (concat)": {"model": "ralm", **base, "user_model": "concat"},
        "ralm, paper attention (no size prior)": {"model": "ralm", **base, "size_prior": False},
        "ralm_average (merge)": {"model": "ralm_average", **base},
        "ralm_average (concat)": {"model": "ralm_average", **base, "user_model": "concat"},
        "centroid cosine (merge embeddings)": {
            "model": "ralm_average",
            **base,
            "transform": False,
            "lookalike_epochs": 0,
        },
        "centroid cosine (concat embeddings)": {
            "model": "ralm_average",
            **base,
            "transform": False,
            "lookalike_epochs": 0,
            "user_model": "concat",
        },
        "minhash": {"model": "minhash"},
        "popularity": {"model": "popularity"},
        "random": {"model": "random"},
    }


FRACTIONS = [0.02, 0.05, 0.1, 0.2]


def run_once(data, split_seed: int, models: dict[str, dict]) -> tuple[pl.DataFrame, list[dict]]:
    train, heldout = holdout_split(data.campaigns, data.n_users, 0.1, split_seed)
    sizes = audience_sizes(data.n_users, FRACTIONS)
    campaigns = list(heldout)
    clicked = np.zeros((data.n_users, len(campaigns)), bool)
    seen = np.zeros_like(clicked)
    for j, cid in enumerate(campaigns):
        clicked[heldout[cid].positives, j] = True
        seen[train[cid].positives, j] = True
    rows, user_rows = [], []
    for name, params in models.items():
        options = {k: v for k, v in params.items() if k != "model"}
        if params["model"].startswith("ralm"):
            options["seed"] = split_seed  # RALM's training seed follows the split; baselines keep theirs
        scorer = build_scorer(params["model"], options)
        start = time.perf_counter()
        scorer.fit(data, train)
        fit_seconds = time.perf_counter() - start
        matrix = np.zeros(clicked.shape, np.float64)
        for j, cid in enumerate(campaigns):
            scored = score_campaign(scorer, data, train[cid], max(sizes.values()))
            row = campaign_metrics(scored.users, scored.candidates, scored.candidate_scores, heldout[cid], sizes)
            rows.append(
                {
                    **row,
                    "model": name,
                    "campaign_id": cid,
                    "repeat": split_seed,
                    "seed_bucket": seed_bucket(train[cid].size, [50, 200]),
                }
            )
            full = np.full(data.n_users, -np.inf)
            full[scored.candidates] = scored.candidate_scores
            matrix[:, j] = full
        # A user's training-seed campaigns are known, not predictions: leave them out of the user's ranking.
        matrix[seen] = -np.inf
        user_rows.append(
            {
                "model": name,
                "repeat": split_seed,
                "fit_seconds": fit_seconds,
                "user_prec_at_5": user_precision_at_k(matrix, clicked, 5),
                "user_prec_at_10": user_precision_at_k(matrix, clicked, 10),
            }
        )
    return pl.DataFrame(rows), user_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=None, help="names of the grid (default: all)")
    parser.add_argument(
        "--synthetic-users",
        type=int,
        default=0,
        help="use the synthetic generator (default config, this many users) with default epochs",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic_users:
            data = load_data("synthetic", Path(tmp), SyntheticConfig(n_users=args.synthetic_users))
            grid, title = model_grid({}), f"Synthetic (SyntheticConfig defaults, {args.synthetic_users} users)"
        else:
            data = load_source(data_source("movielens", path=args.source), Path(tmp))
            grid, title = model_grid(MOVIELENS), "MovieLens-100K"
    models = {name: grid[name] for name in (args.models or grid)}
    frames, user_rows = [], []
    for repeat in range(args.repeats):
        frame, users = run_once(data, repeat, models)
        frames.append(frame)
        user_rows += users
    per_campaign = pl.concat(frames)
    summary = summarize(per_campaign).filter(pl.col("seed_bucket") == "all").drop("seed_bucket", "campaigns")
    user = (
        pl.DataFrame(user_rows).group_by("model").agg(pl.col("user_prec_at_5", "user_prec_at_10", "fit_seconds").mean())
    )
    # Spread of GAUC across repeats, to read differences against.
    spread = (
        per_campaign.group_by("model", "repeat")
        .agg(pl.col("auc").mean())
        .group_by("model")
        .agg(pl.col("auc").std().alias("gauc_std_over_repeats"))
    )
    table = (
        summary.join(user, on="model")
        .join(spread, on="model")
        .select(
            "model",
            "gauc",
            "gauc_std_over_repeats",
            "user_prec_at_5",
            "user_prec_at_10",
            *[c for c in summary.columns if c.startswith(("precision_at", "recall_at"))],
            "fit_seconds",
        )
        .sort("gauc", descending=True)
    )
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        float_precision=4,
        fmt_str_lengths=60,
        tbl_cols=-1,
        tbl_rows=-1,
        tbl_width_chars=400,
    ):
        text = str(table)
    header = (
        f"{title}: {data.n_users} users, {len(data.campaigns)} campaigns, {args.repeats} splits "
        f"(10% of seeds held out + as many non-seeds); audience sizes {FRACTIONS} of users.\n\n"
    )
    print(header + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + text + "\n")


if __name__ == "__main__":
    main()
