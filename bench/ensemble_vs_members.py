"""Issue 19's ensemble goal from ``bench/quality.py --dump`` rows: per data shape, each ensemble variant minus
its best member (the member with the highest mean recall on that shape, in the same run), with the paired
95% CI over campaigns, and recall by the held-out seeds' activity.

    python bench/ensemble_vs_members.py --dump /tmp/quality_dump --data movielens amazon ... --out FILE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_results  # noqa: E402
from lookalike_models.evaluation import ACTIVITY_BUCKETS  # noqa: E402
from lookalike_models.protocol import compare_to_reference  # noqa: E402

MEMBERS = ["affinity_mlp", "pinterest_classifier", "item_ridge"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", type=Path, required=True)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--metric", default="recall_at_5pct")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--note", default="", help="command line of the quality run that wrote the dump")
    args = parser.parse_args()
    lines = [
        "# Pinterest ensemble against its best member",
        "",
        f"From `bench/quality.py --dump` rows ({args.note}). Per shape, the best member is the one with the "
        f"highest mean {args.metric} in the same run; each ensemble minus it [paired 95% CI over campaigns]; "
        "then the same by the held-out seeds' organic activity (campaigns with a held-out seed in the bucket).",
        "",
        "| data | best member | its recall | ensemble | recall | minus best member [95% CI] | <= 5 items | 6-20 items"
        " | > 20 items |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in args.data:
        rows = pl.read_parquet(args.dump / f"{kind}.parquet")
        means = rows.group_by("model").agg(pl.col(args.metric).mean())
        recall = dict(means.iter_rows())
        best = max((m for m in MEMBERS if m in recall), key=recall.get)
        buckets = [f"{args.metric}_{b}" for b in ACTIVITY_BUCKETS]
        overall = compare_to_reference(rows, best, [args.metric], by_bucket=False)
        by_activity = compare_to_reference(rows, best, buckets, by_bucket=False)
        for model in sorted(m for m in recall if m.startswith("pinterest_ensemble")):
            r = overall.filter(pl.col("model") == model).row(0, named=True)
            cells = []
            for b in buckets:
                a = by_activity.filter((pl.col("model") == model) & (pl.col("metric") == b))
                a = a.row(0, named=True) if a.height else None
                ok = a is not None and a["campaigns"] > 0
                cells.append(f"{a['diff']:+.3f} [{a['ci_low']:+.3f}, {a['ci_high']:+.3f}]" if ok else "-")
            lines.append(
                f"| {kind} | {best} | {recall[best]:.3f} | {model} | {recall[model]:.3f} | "
                f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | " + " | ".join(cells) + " |"
            )
    write_results(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
