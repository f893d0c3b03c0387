"""Pinterest ensemble with the activity stacker: what its inner cuts said against what the held-out seeds say
(an ablation). Per data shape and split: each option's mean recall on the inner cuts (members alone, the best
grid blend, the stacker out of fold), the option chosen, and held-out recall@5% of each member alone, the
stacker and the chosen option.

    python bench/stacker_ablation.py --data movielens_sparse amazon_sparse amazon_longtail --splits 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import load_data, machine, write_results  # noqa: E402
from lookalike_models.catalog import build_scorer  # noqa: E402
from lookalike_models.evaluation import audience_sizes, holdout_split  # noqa: E402
from lookalike_models.pinterest.ensemble import rank_scores  # noqa: E402
from lookalike_models.pinterest.stacker import user_activity  # noqa: E402
from lookalike_models.scorers import top_k  # noqa: E402

ORDER = ["item_ridge", "pinterest_classifier", "affinity_mlp"]


def one_split(data, split: int) -> list[str]:
    train, heldout = holdout_split(data.campaigns, data.n_users, 0.1, split)
    ens = build_scorer("pinterest_ensemble", {"stacker": True})
    ens.fit(data, train)
    n_members, n_blends = len(ens.members), len(ens.blends)
    inner = np.nanmean(np.array(list(ens.validation.values())), 0)
    best_grid = n_members + int(np.nanargmax(inner[n_members:n_blends])) if n_blends > n_members else 0
    k = audience_sizes(data.n_users, [0.05])["5pct"]
    everyone, activity = np.arange(data.n_users), user_activity(data)
    # The grid's first rows are the members alone, in the grid's order (not the members' order).
    alone = [ens.members[int(np.argmax(ens.blends[i]))].name for i in range(n_members)]
    assert alone == ORDER, alone
    options = {**{name: ens.blends[i] for i, name in enumerate(alone)}, "grid": ens.blends[best_grid]}
    held = dict.fromkeys([*options, "stacker"], 0.0)
    for cid, h in heldout.items():
        seeds = train[cid]
        ranks = np.stack([rank_scores(m.score(data, seeds, everyone)) for m in ens.members], 1)
        excluded = np.concatenate([seeds.positives, seeds.negatives])
        scores = {name: ranks @ w for name, w in options.items()}
        scores["stacker"] = ens.stacker.decision(ranks, activity)
        for name, s in scores.items():
            audience, _ = top_k(everyone, s.astype(np.float32), k, excluded)
            held[name] += np.isin(h.positives, audience).mean() / len(heldout)
    chosen = alone[ens.choice.overall] if ens.choice.overall < n_members else ens.describe(ens.choice.overall)
    names = [*options, "stacker"]
    inner_of = {**{name: inner[i] for i, name in enumerate(alone)}, "grid": inner[best_grid]}
    inner_of["stacker"] = inner[-1]
    return [
        " / ".join(f"{inner_of[n]:.3f}" for n in names),
        str(chosen if isinstance(chosen, str) else [round(w, 2) for w in chosen]),
        " / ".join(f"{held[n]:.3f}" for n in names),
        str(ens.blends[best_grid].tolist()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["movielens_sparse"])
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = [
        "# Pinterest ensemble with the activity stacker: inner cuts against held-out seeds (an ablation)",
        "",
        f"Command: `python bench/stacker_ablation.py {' '.join(sys.argv[1:])}`; machine: {machine()}.",
        "Recall@5%, in the order item_ridge / pinterest_classifier / affinity_mlp / best grid blend / stacker "
        "(inner cuts: mean over the 4 cuts and the sampled campaigns, the stacker out of fold; held-out: all "
        "campaigns of the split).",
        "",
        "| data | split | inner cuts | chosen | held-out | best grid blend (weights of affinity_mlp, "
        "pinterest_classifier, item_ridge) |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.data:
            data = load_data(kind, Path(tmp))
            for split in args.splits:
                line = f"| {kind} | {split} | " + " | ".join(one_split(data, split)) + " |"
                out.append(line)
                print(line, flush=True)
    write_results(args.out, "\n".join(out))


if __name__ == "__main__":
    main()
