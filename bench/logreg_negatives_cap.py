"""The ``item_logreg`` reference's negatives cap: fit CPU and held-out recall@5% per cap, paired CI.

    python bench/logreg_negatives_cap.py --users 300000 --campaigns 20 --caps 200000 50000 20000

Synthetic data as bench/nightly_scale.py makes it; one tuning split (100). The cap only binds once a
population has more non-seed users than the cap, which the real sets (MovieLens, the Amazon subset)
never do, so this is the only place its effect can be measured.
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

from bench.common import load_data, scale_synthetic  # noqa: E402
from lookalike_models.evaluation import audience_sizes, holdout_split  # noqa: E402
from lookalike_models.protocol import TUNING_SPLITS, compare_to_reference, evaluate_campaigns  # noqa: E402
from lookalike_models.reference import ItemLogRegScorer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=300_000)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--caps", type=int, nargs="+", default=[200_000, 50_000, 20_000])
    args = parser.parse_args()
    n = args.users
    with tempfile.TemporaryDirectory(prefix="lookalike-negcap-") as tmp:
        data = load_data("synthetic", Path(tmp), scale_synthetic(n, args.campaigns))
    split = TUNING_SPLITS[0]
    train, heldout = holdout_split(data.campaigns, n, 0.1, split)
    sizes = audience_sizes(n, [0.05])
    frames = []
    print("| max_negatives | fit CPU (s), all campaigns, 1 thread | recall@5% |\n|---|---|---|")
    for cap in args.caps:
        scorer = ItemLogRegScorer({"max_negatives": cap, "n_jobs": 1})
        start = time.process_time()
        scorer.fit(data, train)
        fit = time.process_time() - start
        rows = evaluate_campaigns(scorer, data, train, heldout, sizes, [50, 200])
        frames.append(
            pl.DataFrame(rows).with_columns(pl.lit(f"cap {cap}").alias("model"), pl.lit(split).alias("split_seed"))
        )
        print(f"| {cap:,} | {fit:.1f} | {np.mean([r['recall_at_5pct'] for r in rows]):.4f} |", flush=True)
    comparison = compare_to_reference(pl.concat(frames), f"cap {args.caps[0]}", ["recall_at_5pct"], by_bucket=False)
    print(f"\n| cap | recall@5% minus cap {args.caps[0]:,} [95% CI] | wins/campaigns |\n|---|---|---|")
    for r in comparison.iter_rows(named=True):
        print(
            f"| {r['model']} | {r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] "
            f"| {r['wins']}/{r['campaigns']} |"
        )


if __name__ == "__main__":
    main()
