"""Do the learned user embeddings (StarSpace, RALM) beat TruncatedSVD user factors? Issue 10, item 4.

    LOOKALIKE_DATA_ROOT=/work/shared/data python bench/embeddings_quality.py --splits 0 1 2 3 4 \
        --out bench/results/embeddings.md

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

import numpy as np
import polars as pl
import torch

from lookalike_models.config import DataSource
from lookalike_models.pipeline import evaluate_scorers
from lookalike_models.sources import load_encoded

MODELS = {
    "svd_centroid": {},
    "popularity": {},
    "centroid_cosine": {},
    "lsh_density": {},
    "affinity_mlp": {},
    "ralm_average": {},
    "ralm": {},
}
METRIC = "recall_at_5pct"


def ensure_svd_reference() -> None:
    """Register a local ``svd_centroid`` until the library has one (issue 10 item 1)."""
    import lookalike_models.models  # noqa: F401  (registers the library's scorers)
    from lookalike_models.scorers import SCORERS

    if "svd_centroid" in SCORERS:
        return
    import scipy.sparse as sp
    from pydantic import BaseModel
    from sklearn.decomposition import TruncatedSVD

    from lookalike_models.scorers import AudienceScorer, register

    class SvdConfig(BaseModel):
        n_components: int = 64
        seed: int = 0

    @register("svd_centroid")
    class SvdCentroid(AudienceScorer):
        config_class = SvdConfig

        def fit(self, data, train_seeds) -> None:
            x = sp.csr_matrix((np.ones(data.user_idx.size, np.float32), (data.user_idx, data.item_idx)),
                              shape=(data.n_users, data.n_items))
            x.data[:] = 1.0
            k = min(self.config.n_components, min(x.shape) - 1)
            f = TruncatedSVD(k, random_state=self.config.seed).fit_transform(x)
            self.factors = (f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)).astype(np.float32)

        def score(self, data, seeds, candidates):
            c = self.factors[seeds.positives].mean(0)
            return self.factors[candidates] @ (c / max(float(np.linalg.norm(c)), 1e-12))


def evaluate(data, models: dict[str, dict], splits: list[int]) -> pl.DataFrame:
    parts = []
    for split in splits:
        rows = evaluate_scorers(data, models, seed=split)
        parts.append(rows.with_columns(pl.lit(split).alias("split")))
    return pl.concat(parts, how="diagonal_relaxed")


def paired_ci(rows: pl.DataFrame, model: str, reference: str, metric: str = METRIC, n_boot: int = 10_000,
              seed: int = 0) -> tuple[float, float, float]:
    """Mean difference model - reference and its 95% bootstrap CI over campaigns (split-averaged)."""
    per = (rows.filter(pl.col("model").is_in([model, reference]))
           .group_by("campaign_id", "model").agg(pl.col(metric).mean())
           .pivot(on="model", index="campaign_id", values=metric).drop_nulls())
    diff = (per[model] - per[reference]).to_numpy()
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, diff.size, (n_boot, diff.size))].mean(1)
    return float(diff.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def table(rows: pl.DataFrame, reference: str = "svd_centroid") -> str:
    lines = [f"| scorer | {METRIC.replace('_at_', '@')} | GAUC | diff vs {reference} [95% CI] |", "|---|---|---|---|"]
    summary = rows.group_by("model").agg(pl.col(METRIC).mean(), pl.col("auc").mean()).sort(METRIC, descending=True)
    for r in summary.iter_rows(named=True):
        ci = "" if r["model"] == reference else "{:+.3f} [{:+.3f}, {:+.3f}]".format(*paired_ci(rows, r["model"],
                                                                                              reference))
        lines.append(f"| {r['model']} | {r[METRIC]:.3f} | {r['auc']:.3f} | {ci} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", nargs="+", default=["movielens", "amazon"])
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--models", default=None, help="comma-separated subset of MODELS")
    parser.add_argument("--extra", default=None, help='JSON {name: {"model": ..., params...}} added to the models')
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rows", type=Path, default=None, help="write per-campaign rows (parquet prefix)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ensure_svd_reference()
    models = {k: v for k, v in MODELS.items() if not args.models or k in args.models.split(",")}
    models.update(json.loads(args.extra) if args.extra else {})
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.data:
            data = load_encoded(DataSource(kind=kind), Path(tmp))
            start = time.perf_counter()
            rows = evaluate(data, models, args.splits)
            if args.rows:
                rows.write_parquet(f"{args.rows}_{kind}.parquet")
            text = (f"### {kind}: {data.n_users} users, {data.n_items} items, {len(data.campaigns)} campaigns, "
                    f"split seeds {args.splits} ({time.perf_counter() - start:.0f} s)\n\n{table(rows)}\n")
            print(text, flush=True)
            out.append(text)
    if args.out:
        args.out.write_text("\n".join(out))


if __name__ == "__main__":
    main()
