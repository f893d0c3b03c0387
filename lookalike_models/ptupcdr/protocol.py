"""PTUPCDR's cold-start protocol: a share beta of the overlapping users lose their target-domain ratings; the
methods predict those ratings from source-domain activity only; MAE and RMSE on them.

Split of the overlapping users (users with ratings in both domains), per seed:
  test = beta of them (cold-start users, scored once at the end),
  val  = ``val_frac`` of them, taken from the rest (cold too: their target ratings are hidden from every MF;
         used to choose epochs and the EMCDR ridge, never the test users),
  train = the others (their target ratings train the target MF and the bridges).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lookalike_models.dataset import LookalikeData
from lookalike_models.ptupcdr.model import (
    Ratings,
    bridged_vectors,
    fine_tune_vectors,
    fit_emcdr,
    fit_mf,
    fit_ptupcdr,
    liked_histories,
    mae_rmse,
    predict,
)


@dataclass
class TwoDomains:
    """Ratings of one source and one target domain in the data's shared user/item index space."""

    source: Ratings
    target: Ratings
    n_users: int
    n_items: int

    @classmethod
    def from_data(cls, data: LookalikeData, source: str | None = None, target: str | None = None) -> TwoDomains:
        """``source``/``target`` name domains of ``data.domains``; by default the first and second."""
        if len(data.domains) < 2 and (source is None or target is None):
            raise ValueError(f"cross-domain transfer needs two domains, the data has {data.domains}")
        codes = [data.domains.index(name) if name else default for name, default in ((source, 0), (target, 1))]

        def ratings_of(code: int) -> Ratings:
            keep = data.domain == code
            return Ratings(data.user_idx[keep].astype(np.int64), data.item_idx[keep].astype(np.int64),
                           data.weight[keep].astype(np.float32))

        return cls(ratings_of(codes[0]), ratings_of(codes[1]), data.n_users, data.n_items)

    def overlapping_users(self) -> np.ndarray:
        return np.intersect1d(np.unique(self.source.users), np.unique(self.target.users))


@dataclass
class ColdStartConfig:
    dim: int = 10
    biases: bool = True  # mean + item bias in every MF (every method alike); the paper has a plain dot product
    mf_epochs: int = 60
    mf_lr: float = 0.01
    mf_reg: float = 0.2
    meta_epochs: int = 60
    meta_lr: float = 0.001
    meta_reg: float = 0.05
    meta_patience: int = 3
    meta_hidden: int = 50
    history_len: int = 20
    like_threshold: float = 3.0
    val_frac: float = 0.1
    ridges: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])


@dataclass
class ColdStartSplit:
    train_users: np.ndarray
    val_users: np.ndarray
    test_users: np.ndarray


def cold_start_split(domains: TwoDomains, beta: float, val_frac: float, seed: int) -> ColdStartSplit:
    overlap = np.random.default_rng(seed).permutation(domains.overlapping_users())
    n_test = int(round(beta * overlap.size))
    n_val = max(1, int(round(val_frac * overlap.size)))
    if overlap.size - n_test - n_val < 1:
        raise ValueError(f"beta={beta} and val_frac={val_frac} leave no training users of {overlap.size}")
    return ColdStartSplit(np.sort(overlap[n_test + n_val :]), np.sort(overlap[n_test : n_test + n_val]),
                          np.sort(overlap[:n_test]))


def run_cold_start(domains: TwoDomains, beta: float, seed: int = 0,
                   config: ColdStartConfig | None = None) -> dict[str, dict[str, float]]:
    """MAE/RMSE on the cold-start users' target ratings for: global mean, target-only MF, merged-domain MF,
    EMCDR and PTUPCDR. Target-only MF has no vector for a cold user: it predicts with a zero vector
    (mean + item bias with ``biases``)."""
    cfg = config or ColdStartConfig()
    split = cold_start_split(domains, beta, cfg.val_frac, seed)
    cold = np.concatenate([split.val_users, split.test_users])
    target_train = domains.target.subset(~np.isin(domains.target.users, cold))
    val, test = domains.target.of_users(split.val_users), domains.target.of_users(split.test_users)
    n_u, n_i = domains.n_users, domains.n_items
    mf = dict(dim=cfg.dim, biases=cfg.biases, epochs=cfg.mf_epochs, lr=cfg.mf_lr, reg=cfg.mf_reg, seed=seed)
    source_mf = fit_mf(domains.source, n_u, n_i, **mf)
    target_mf = fit_mf(target_train, n_u, n_i, **mf)
    merged_mf = fit_mf(Ratings.concat(domains.source, target_train), n_u, n_i, **mf)

    results: dict[str, dict[str, float]] = {}

    def record(name: str, pred: np.ndarray) -> None:
        mae, rmse = mae_rmse(pred, test.ratings)
        results[name] = {"mae": mae, "rmse": rmse}

    record("global_mean", np.full(len(test), target_train.ratings.mean()))
    record("target_mf", predict(target_mf, np.zeros((len(test), cfg.dim), np.float32), test.items))
    record("merged_mf", predict(merged_mf, merged_mf.user.weight[test.users], test.items))

    src_vec, tgt_vec = source_mf.user.weight.numpy(), target_mf.user.weight.numpy()
    best_ridge, best_mse = cfg.ridges[0], np.inf
    for ridge in cfg.ridges:  # chosen on the validation users' target ratings
        bridge = fit_emcdr(src_vec[split.train_users], tgt_vec[split.train_users], ridge)
        mse = mae_rmse(predict(target_mf, bridge(src_vec[val.users]), val.items), val.ratings)[1] ** 2
        if mse < best_mse:
            best_ridge, best_mse = ridge, mse
    emcdr = fit_emcdr(src_vec[split.train_users], tgt_vec[split.train_users], best_ridge)
    record("emcdr", predict(target_mf, emcdr(src_vec[test.users]), test.items))

    histories = liked_histories(domains.source, n_u, n_i, cfg.history_len, cfg.like_threshold)
    model, curve = fit_ptupcdr(source_mf, target_mf, histories, target_train.of_users(split.train_users), val,
                               epochs=cfg.meta_epochs, lr=cfg.meta_lr, meta_hidden=cfg.meta_hidden, reg=cfg.meta_reg,
                               patience=cfg.meta_patience, seed=seed)
    record("ptupcdr", predict(target_mf, bridged_vectors(model, test.users, histories), test.items))
    results["ptupcdr"]["epochs"] = float(int(np.argmin(curve)) + 1)
    results["emcdr"]["ridge"] = best_ridge
    for name in results:
        results[name].update(n_test_users=float(split.test_users.size), n_test_ratings=float(len(test)))
    return results


def reveal(ratings: Ratings, n_known: int, seed: int) -> tuple[Ratings, Ratings]:
    """Split each user's ratings into ``n_known`` random known ones and the rest (users left with no rest
    are dropped from both)."""
    order = np.lexsort((np.random.default_rng(seed).random(len(ratings)), ratings.users))
    sorted_users = ratings.users[order]
    rank = np.empty(len(ratings), np.int64)
    rank[order] = np.arange(len(ratings)) - np.searchsorted(sorted_users, sorted_users)
    known, rest = ratings.subset(rank < n_known), ratings.subset(rank >= n_known)
    return known.of_users(np.unique(rest.users)), rest


def run_warm_start(domains: TwoDomains, beta: float, n_known: int = 5, seed: int = 0,
                   config: ColdStartConfig | None = None,
                   epoch_grid: tuple[int, ...] = (10, 25, 50, 100, 200)) -> dict[str, dict[str, float]]:
    """Cold test users reveal ``n_known`` target ratings each (random); MAE/RMSE on their other ratings for:
    the bridge alone, a zero-initialised vector fitted to the known ratings (target MF's way for a new
    user), and the bridged vector fine-tuned on them (warm start). Fine-tuning epochs are chosen per method
    on the validation users treated the same way. Same split and models as :func:`run_cold_start`."""
    cfg = config or ColdStartConfig()
    split = cold_start_split(domains, beta, cfg.val_frac, seed)
    cold = np.concatenate([split.val_users, split.test_users])
    target_train = domains.target.subset(~np.isin(domains.target.users, cold))
    val = domains.target.of_users(split.val_users)
    n_u, n_i = domains.n_users, domains.n_items
    mf = dict(dim=cfg.dim, biases=cfg.biases, epochs=cfg.mf_epochs, lr=cfg.mf_lr, reg=cfg.mf_reg, seed=seed)
    source_mf, target_mf = fit_mf(domains.source, n_u, n_i, **mf), fit_mf(target_train, n_u, n_i, **mf)
    histories = liked_histories(domains.source, n_u, n_i, cfg.history_len, cfg.like_threshold)
    model, _ = fit_ptupcdr(source_mf, target_mf, histories, target_train.of_users(split.train_users), val,
                           epochs=cfg.meta_epochs, lr=cfg.meta_lr, meta_hidden=cfg.meta_hidden, reg=cfg.meta_reg,
                           patience=cfg.meta_patience, seed=seed)

    def evaluate(ratings: Ratings, init: str, epochs: int) -> tuple[float, float, Ratings]:
        known, rest = reveal(ratings, n_known, seed + 1)
        users = np.unique(rest.users)
        bridged = bridged_vectors(model, users, histories)
        start = bridged if init == "bridge" else np.zeros_like(bridged)
        vectors = fine_tune_vectors(target_mf, users, start, known, epochs, reg=cfg.mf_reg) if epochs else start
        mae, rmse = mae_rmse(predict(target_mf, vectors[np.searchsorted(users, rest.users)], rest.items),
                             rest.ratings)
        return mae, rmse, rest

    test = domains.target.of_users(split.test_users)
    results = {}
    for name, init, grid in (("ptupcdr_cold", "bridge", (0,)), ("target_mf_fitted", "zeros", epoch_grid),
                             ("ptupcdr_warm_start", "bridge", epoch_grid)):
        epochs = min(grid, key=lambda e: evaluate(val, init, e)[1])
        mae, rmse, rest = evaluate(test, init, epochs)
        results[name] = {"mae": mae, "rmse": rmse, "fine_tune_epochs": float(epochs),
                         "n_users": float(np.unique(rest.users).size), "n_ratings": float(len(rest))}
    return results
