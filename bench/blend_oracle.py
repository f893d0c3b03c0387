"""How much could any rank blend of the Pinterest ensemble's members add? An ablation, not a method.

    LOOKALIKE_DATA_ROOT=/work/shared/data python bench/blend_oracle.py --data movielens amazon --splits 0 1 2 3 4 \
        --out bench/results/ensemble_blend_oracle.md

Per split, the default ``pinterest_ensemble`` is fitted on the training seeds; then every blend of its grid
(member rank weights in steps of 0.25) is scored on the held-out seeds. The best blend in hindsight bounds
what choosing the blend on inner cuts can reach; the blend the ensemble chose and each member alone are
shown beside it. Recall@5% of the held-out seeds, mean over campaigns.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import load_data, machine, write_results  # noqa: E402
from lookalike_models.catalog import build_scorer  # noqa: E402
from lookalike_models.evaluation import audience_sizes, holdout_split  # noqa: E402
from lookalike_models.pinterest.ensemble import rank_scores  # noqa: E402
from lookalike_models.scorers import top_k  # noqa: E402


def blend_recalls(data, split: int) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """(member names, blends [n_blends, n_members], held-out recall@5% per blend, the ensemble's choice)."""
    train, heldout = holdout_split(data.campaigns, data.n_users, 0.1, split)
    ensemble = build_scorer("pinterest_ensemble", {"stacker": False})  # the grid blends only
    ensemble.fit(data, train)
    k = audience_sizes(data.n_users, [0.05])["5pct"]
    everyone = np.arange(data.n_users)
    recall = np.zeros(len(ensemble.blends))
    for cid, held in heldout.items():
        seeds = train[cid]
        ranks = np.stack([rank_scores(m.score(data, seeds, everyone)) for m in ensemble.members], 1)
        excluded = np.concatenate([seeds.positives, seeds.negatives])
        for b, weights in enumerate(ensemble.blends):
            audience, _ = top_k(everyone, (ranks @ weights).astype(np.float32), k, excluded)
            recall[b] += np.isin(held.positives, audience).mean() / len(heldout)
    return [m.name for m in ensemble.members], ensemble.blends, recall, ensemble.choice.overall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["movielens"])
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = [
        "# Pinterest ensemble: the best blend in hindsight (an ablation)",
        "",
        f"Command: `python bench/blend_oracle.py {' '.join(sys.argv[1:])}`; machine: {machine()}.",
        "",
        "| data | split | members alone | chosen blend | its recall | best blend in hindsight | its recall "
        "| gain over best member |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.data:
            data = load_data(kind, Path(tmp))
            for split in args.splits:
                names, blends, recall, chosen = blend_recalls(data, split)
                alone = {names[int(np.argmax(w))]: recall[b] for b, w in enumerate(blends) if w.max() == 1.0}
                best = int(np.argmax(recall))
                line = (
                    f"| {kind} | {split} | {', '.join(f'{n} {r:.3f}' for n, r in alone.items())} | "
                    f"{blends[chosen].tolist()} | {recall[chosen]:.3f} | {blends[best].tolist()} | "
                    f"{recall[best]:.3f} | {recall[best] - max(alone.values()):+.3f} |"
                )
                out.append(line)
                print(line, flush=True)
    write_results(args.out, "\n".join(out))


if __name__ == "__main__":
    main()
