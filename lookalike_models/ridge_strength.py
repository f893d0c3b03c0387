"""Choosing ``item_ridge``'s strength per run, on the run's own inner validation cut of the training seeds.

A strength that suited two data sets does not carry to a third (a long-tailed catalogue with more items than
users wanted a far different one), so the strength is picked each run from a grid expressed relative to the
data: multiples of the mean item count (the mean of diag G), over a wide log range. Each candidate costs one
Cholesky factor of ``G + lam I``; the search factors in float32 with every free core (a ranking is all it
needs), while the model's own factor stays float64 on one thread (bit-identical in every process).

The cut is ``evaluation.inner_validation_cut`` (the one the ensemble and the classifier use): each campaign's
validation seeds compete, scored from the weights of its fit seeds, with one shared sample of non-seed users
for the top ``audience`` share (``inner_validation.validation_recall``); the strength with the best mean over
campaigns wins. After the grid, the two half-steps beside the winner are tried too.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from lookalike_models.dataset import CampaignSeeds
from lookalike_models.evaluation import inner_validation_cut
from lookalike_models.inner_validation import validation_recall
from lookalike_models.progress import Progress
from lookalike_models.threads import free_cores, one_blas_thread

log = logging.getLogger(__name__)


def choose_strength(
    features: sp.csr_matrix,
    gram: np.ndarray,
    train_seeds: dict[str, CampaignSeeds],
    grid: list[float],
    validation_share: float = 0.2,
    audience: float = 0.05,
    max_users: int = 100_000,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """(strength, {strength: mean validation recall}) for ``features`` [n_users, n_kept] binary rows and their
    Gram ``gram`` [n_kept, n_kept] (not modified). Without any campaign large enough to cut, the grid's
    geometric middle, with no results."""
    cuts = {cid: cut for cid, s in train_seeds.items() if (cut := inner_validation_cut(s, validation_share, seed))}
    if not cuts:
        middle = float(np.exp(np.mean(np.log(grid))))
        log.info("item_ridge: no campaign has seeds to cut; strength %.3g (the grid's middle)", middle)
        return middle, {}
    rng = np.random.default_rng(seed + 11)
    n_users = features.shape[0]
    sample = np.sort(rng.choice(n_users, min(max_users, n_users), replace=False))
    rows = np.union1d(sample, np.concatenate([val for _, val in cuts.values()]))
    x_rows = features[rows].astype(np.float32)
    # X^T y for each campaign's fit seeds: [n_kept, n_campaigns]
    counts = np.stack([np.asarray(features[fit.positives].sum(0)).ravel() for fit, _ in cuts.values()], 1)
    in_sample = np.isin(rows, sample)
    masks = []  # per campaign: its validation seeds and the sampled users it competes with, as row positions
    for fit, val in cuts.values():
        others = in_sample & ~np.isin(rows, np.concatenate([fit.positives, fit.negatives]))
        others |= np.isin(rows, val)
        masks.append((np.searchsorted(rows, val), np.flatnonzero(others)))
    gram32 = gram.astype(np.float32)
    mean_count = max(float(np.diag(gram32).mean()), 1e-12)
    counts32 = counts.astype(np.float32)

    def measure(strength: float) -> float:
        """Mean validation recall at one strength: one float32 factor and solve, on one BLAS thread."""
        factor = gram32.copy()
        factor[np.diag_indices_from(factor)] += np.float32(strength * mean_count)
        factor = scipy.linalg.cho_factor(factor, overwrite_a=True, check_finite=False)
        scores = np.asarray(x_rows @ scipy.linalg.cho_solve(factor, counts32, check_finite=False))
        return float(
            np.mean([validation_recall(scores[v, c], scores[o, c], audience) for c, (v, o) in enumerate(masks)])
        )

    # Candidates run side by side, each on one BLAS thread: several single-threaded factorisations share
    # busy cores gracefully, where one multi-threaded factorisation's threads wait on each other.
    results: dict[float, float] = {}
    grid = sorted(grid)
    step = float(np.sqrt(grid[1] / grid[0])) if len(grid) > 1 else 2.0
    with (
        Progress("item_ridge strength search", len(grid) + 2, "factorisations") as progress,
        one_blas_thread(),
        ThreadPoolExecutor(free_cores()) as pool,
    ):

        def run(strengths: list[float]) -> None:
            for strength, recall in zip(strengths, pool.map(measure, strengths)):
                results[strength] = recall
                progress.advance()

        run(grid)
        best = max(results, key=results.get)
        run([s for s in (best / step, best * step) if s not in results])
    best = max(sorted(results), key=results.get)  # ties: the weaker strength (sorted ascending)
    log.info(
        "item_ridge: strength %.3g x mean item count chosen on %d campaigns' inner cuts (recall by strength %s)",
        best,
        len(cuts),
        {f"{k:.3g}": round(v, 3) for k, v in sorted(results.items())},
    )
    return best, results
