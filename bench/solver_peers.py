"""The per-campaign models against the scikit-learn solvers a user would pick instead, on the same sparse
matrices, in the same run: seconds and how far the answers differ.

    python bench/solver_peers.py --users 100000 --campaigns 100
    python bench/solver_peers.py --users 300000 --campaigns 100 --logreg-solvers lbfgs

- **item_ridge** (one Cholesky factor of the regularised item Gram matrix, every campaign's weights from one
  multi-right-hand-side solve) against ``sklearn.linear_model.Ridge`` on the same binary user x item rows and
  the same alpha: once per campaign (``solver="auto"``, what a per-campaign loop gets), and once with every
  campaign as a column of a multi-target ``y`` (``solver="cholesky"``, the closest sklearn gets to ours).
- **item_logreg** fits scikit-learn's ``LogisticRegression(solver="liblinear")`` itself, so against
  liblinear its ratio is 1 by construction. The peers here are sklearn's other solvers on the same TF-IDF
  rows and sampled labels (``lbfgs``, ``saga``): time, and the Spearman rank agreement of their scores with
  liblinear's (an audience is a ranking).

Synthetic data as bench/nightly_scale.py makes it (generated first, not timed); one thread per fit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bench.common import load_data, machine, scale_synthetic  # noqa: E402


def ridge_rows(data, campaigns: int) -> list[str]:
    from sklearn.linear_model import Ridge

    from lookalike_models.item_ridge import ItemRidgeScorer

    seeds = list(data.campaigns.values())[:campaigns]
    ours = ItemRidgeScorer()
    start = time.process_time()
    ours.fit(data, {s.campaign_id: s for s in seeds})
    weights = np.stack([ours.weights(s.positives) for s in seeds], axis=1)
    ours_s = time.process_time() - start
    targets = np.zeros((data.n_users, len(seeds)))
    for j, s in enumerate(seeds):
        targets[s.positives, j] = 1.0
    X = ours.features
    start = time.process_time()
    multi = Ridge(alpha=ours.lam, fit_intercept=False, solver="cholesky").fit(X, targets).coef_.T
    multi_s = time.process_time() - start
    looped = min(len(seeds), 10)  # per-campaign Ridge is slow: time 10 campaigns, scale to all
    start = time.process_time()
    per = np.stack([Ridge(alpha=ours.lam, fit_intercept=False).fit(X, targets[:, j]).coef_ for j in range(looped)], 1)
    per_s = (time.process_time() - start) * len(seeds) / looped
    scale = np.abs(weights).max()
    return [
        f"| item_ridge: ours (Gram + one Cholesky + multi-RHS solve) | {ours_s:.1f} | 1.0x | - |",
        f"| sklearn Ridge, all campaigns as one multi-target y (cholesky) | {multi_s:.1f} | "
        f"{multi_s / ours_s:.1f}x | {np.abs(multi - weights).max() / scale:.1e} |",
        f"| sklearn Ridge per campaign (solver auto; {looped} timed, scaled to {len(seeds)}) | {per_s:.1f} | "
        f"{per_s / ours_s:.1f}x | {np.abs(per - weights[:, :looped]).max() / scale:.1e} |",
    ]


def logreg_rows(data, campaigns: int, solvers: list[str]) -> list[str]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from lookalike_models.reference import ItemLogRegConfig, campaign_labels, user_item_tfidf

    cfg = ItemLogRegConfig()
    X = user_item_tfidf(data)
    seeds = list(data.campaigns.values())[: min(campaigns, 20)]  # 20 campaigns: enough for a stable ratio
    times, agreement = {}, {}
    reference_scores = {}
    for solver in ("liblinear", *solvers):
        times[solver], agreement[solver] = 0.0, []
        for s in seeds:
            rows, labels = campaign_labels(X.shape[0], s, cfg.max_negatives, cfg.seed)
            start = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = LogisticRegression(C=cfg.C, solver=solver, max_iter=200).fit(X[rows], labels)
            times[solver] += time.process_time() - start
            scores = model.decision_function(X)
            if solver == "liblinear":
                reference_scores[s.campaign_id] = scores
            else:
                agreement[solver].append(spearmanr(scores, reference_scores[s.campaign_id]).statistic)
    base = times["liblinear"]
    out = [f"| item_logreg: liblinear, as the model fits it ({len(seeds)} campaigns) | {base:.1f} | 1.0x | - |"]
    for solver in solvers:
        out.append(
            f"| sklearn LogisticRegression solver={solver} | {times[solver]:.1f} | {times[solver] / base:.1f}x "
            f"| Spearman {np.mean(agreement[solver]):.3f} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000])
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument(
        "--logreg-solvers", nargs="+", default=["lbfgs", "saga"], help="saga takes ~30x liblinear's time"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for n_users in args.users:
        synthetic = scale_synthetic(n_users, args.campaigns)
        with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
            data = load_data("synthetic", Path(tmp), synthetic)
            print(f"\n{n_users:,} users, {data.user_idx.size:,} interactions, {len(data.campaigns)} campaigns\n")
            print("| fit | CPU (s) | time / ours | max difference (weights, relative) / rank agreement |")
            print("|---|---|---|---|")
            for row in ridge_rows(data, args.campaigns) + logreg_rows(data, args.campaigns, args.logreg_solvers):
                print(row, flush=True)


if __name__ == "__main__":
    main()
