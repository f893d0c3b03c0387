"""PTUPCDR's cold-start protocol: a share beta of the overlapping users lose their target-domain ratings; the
methods predict those ratings from source-domain activity only; MAE and RMSE on them.

Split of the overlapping users (users with ratings in both domains), one permutation per split seed:
  val  = its first ``val_frac`` (cold too: their target ratings are hidden from every MF; they choose epochs,
         the EMCDR ridge and the bias baseline's alpha; the same users at every beta, never a test user),
  test = the next beta share (cold-start users, scored once at the end),
  train = the others (their target ratings train the target MF and the bridges).
Hyper-parameters are chosen on the split seeds ``TUNING_SEEDS``; tables report ``REPORTED_SEEDS``.

A benchmark's protocol (``bench/ptupcdr_cold_start.py``, ``tests/test_ptupcdr.py``), outside the library: the
production scorer needs only ``lookalike_models.ptupcdr.domains``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lookalike_models.ptupcdr.bias import fit_bias_baseline
from lookalike_models.ptupcdr.domains import Ratings, TwoDomains, liked_histories
from lookalike_models.ptupcdr.model import BridgeArchitecture, RatingMF, bridged_users, predict, with_biases
from lookalike_models.ptupcdr.training import (
    BridgeTraining,
    MFTraining,
    fine_tune_vectors,
    fit_emcdr,
    fit_mf,
    fit_ptupcdr,
    mae_rmse,
)

# Split seeds: hyper-parameters and defaults are chosen on TUNING_SEEDS only; tables report REPORTED_SEEDS.
TUNING_SEEDS = (100, 101, 102, 103, 104)
REPORTED_SEEDS = (0, 1, 2, 3, 4)


@dataclass
class ColdStartConfig:
    """Defaults chosen on the tuning split seeds 100-104 (``bench/ptupcdr_cold_start.py --tune``)."""

    dim: int = 10
    biases: bool = True  # mean + user and item biases in every MF (every method alike); the paper has none
    mf_epochs: int = 60
    mf_lr: float = 0.01
    mf_reg: float = 0.3  # source and target MF (target MF, EMCDR, PTUPCDR)
    merged_mf_reg: float = 0.3  # the merged MF (CMF), tuned on its own
    meta_objective: str = "rating_mae"  # "rating" (MSE, the paper's) or "rating_mae" (absolute error)
    meta_epochs: int = 60
    meta_lr: float = 0.001
    meta_reg: float = 0.05
    meta_patience: int = 3
    meta_hidden: int = 50
    history_len: int = 20
    like_threshold: float = 3.0
    val_frac: float = 0.1
    ridges: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    # Ablation rows of the bridge, names of ABLATIONS; none by default (each is one more meta training).
    ablations: tuple[str, ...] = ()

    def mf_training(self, reg: float, seed: int) -> MFTraining:
        return MFTraining(dim=self.dim, biases=self.biases, epochs=self.mf_epochs, lr=self.mf_lr, reg=reg, seed=seed)

    def bridge_training(self, seed: int) -> BridgeTraining:
        return BridgeTraining(
            epochs=self.meta_epochs,
            lr=self.meta_lr,
            reg=self.meta_reg,
            patience=self.meta_patience,
            objective=self.meta_objective,
            seed=seed,
        )


# name -> (personal, map_embedding, map_offset, on_baseline). personal/map_*: BridgeArchitecture's switches;
# on_baseline: the bridge refines the bias baseline (its mean, item biases and alpha x o_u as the offset it
# maps) rather than the target MF's own mean and item biases with the source MF's user bias.
PTUPCDR_VARIANT = (True, True, True, False)
ABLATIONS = {
    "ptupcdr_no_offset": (True, True, False, False),  # the paper's bridge: embedding only
    "shared_bridge": (False, True, True, False),  # one bridge for all users, trained on the same task
    "offset_bridge": (True, False, True, False),  # personal offset map only, no embedding
    "ptupcdr_on_baseline": (True, True, True, True),  # the bridge as a refinement of the bias baseline
}


@dataclass
class ColdStartSplit:
    train_users: np.ndarray
    val_users: np.ndarray
    test_users: np.ndarray


def cold_start_split(domains: TwoDomains, beta: float, val_frac: float, seed: int) -> ColdStartSplit:
    """One permutation of the overlapping users per seed: validation = its first ``val_frac`` (the same users
    at every beta, so they are never test users of the same seed at another beta), test = the next ``beta``
    share (nested across betas), train = the rest."""
    overlap = np.random.default_rng(seed).permutation(domains.overlapping_users())
    n_test = int(round(beta * overlap.size))
    n_val = max(1, int(round(val_frac * overlap.size)))
    if overlap.size - n_test - n_val < 1:
        raise ValueError(f"beta={beta} and val_frac={val_frac} leave no training users of {overlap.size}")
    return ColdStartSplit(
        np.sort(overlap[n_val + n_test :]), np.sort(overlap[:n_val]), np.sort(overlap[n_val : n_val + n_test])
    )


def with_offsets(mf: RatingMF) -> np.ndarray:
    """float32 [n_users, d + 1]: user vectors with the user bias b_u as the last column."""
    return np.hstack([mf.user.weight.numpy(), mf.user_bias.weight.numpy()])


def run_cold_start(
    domains: TwoDomains, beta: float, seed: int = 0, config: ColdStartConfig | None = None, mf_cache: dict | None = None
) -> dict[str, dict[str, float]]:
    """MAE/RMSE on the cold-start users' target ratings (and on the validation users', ``val_mae``) for:
    global mean, target-only MF, merged-domain MF, the bias baseline, EMCDR and PTUPCDR (plus the ablation
    bridges of ``ABLATIONS`` named in ``config.ablations``). Target-only MF has no vector or offset for a cold
    user: it predicts mean + item bias. Merged MF's user bias is shared by both domains; EMCDR maps the user
    vector and offset [u_src, b_src] -> [u_tgt, b_tgt] with one ridge map; PTUPCDR's bridge maps both.
    ``mf_cache``: a dict shared by calls on the same (beta, seed) that differ in other settings (tuning), so
    each MF is fitted once per L2 weight."""
    cfg = config or ColdStartConfig()
    split = cold_start_split(domains, beta, cfg.val_frac, seed)
    cold = np.concatenate([split.val_users, split.test_users])
    target_train = domains.target.subset(~np.isin(domains.target.users, cold))
    val, test = domains.target.of_users(split.val_users), domains.target.of_users(split.test_users)
    n_u, n_i = domains.n_users, domains.n_items
    cache = {} if mf_cache is None else mf_cache

    def fitted(name: str, ratings: Ratings, reg: float) -> RatingMF:
        key = (name, beta, seed, reg, cfg.dim, cfg.biases, cfg.mf_epochs, cfg.mf_lr)
        if key not in cache:
            cache[key] = fit_mf(ratings, n_u, n_i, cfg.mf_training(reg, seed))
        return cache[key]

    source_mf = fitted("source", domains.source, cfg.mf_reg)
    target_mf = fitted("target", target_train, cfg.mf_reg)
    merged_mf = fitted("merged", Ratings.concat(domains.source, target_train), cfg.merged_mf_reg)

    results: dict[str, dict[str, float]] = {}

    def record(name: str, predict_ratings, **facts: float) -> None:
        """``predict_ratings(users, items)`` -> ratings; scored on the test and the validation users."""
        mae, rmse = mae_rmse(predict_ratings(test.users, test.items), test.ratings)
        val_mae = mae_rmse(predict_ratings(val.users, val.items), val.ratings)[0]
        results[name] = {"mae": mae, "rmse": rmse, "val_mae": val_mae, **facts}

    train_mean = float(target_train.ratings.mean())
    record("global_mean", lambda u, i: np.full(u.size, train_mean))
    record("target_mf", lambda u, i: predict(target_mf, np.zeros((u.size, cfg.dim), np.float32), i))
    record(
        "merged_mf",
        lambda u, i: predict(merged_mf, merged_mf.user.weight[u], i, merged_mf.user_bias.weight[u, 0].numpy()),
    )
    baseline = fit_bias_baseline(domains.source, target_train, val, n_u, n_i)
    record(
        "bias_baseline",
        baseline.predict,
        alpha=baseline.alpha,
        user_shrink=baseline.user_shrink,
        item_shrink=baseline.item_shrink,
    )

    src_x, tgt_x = with_offsets(source_mf), with_offsets(target_mf)

    def emcdr_predict(bridge):
        def predict_ratings(u, i):
            x = bridge(src_x[u])
            return predict(target_mf, x[:, : cfg.dim], i, x[:, cfg.dim])

        return predict_ratings

    # The ridge is chosen on the validation users' target ratings.
    bridges = {r: fit_emcdr(src_x[split.train_users], tgt_x[split.train_users], r) for r in cfg.ridges}
    best_ridge = min(
        cfg.ridges, key=lambda r: mae_rmse(emcdr_predict(bridges[r])(val.users, val.items), val.ratings)[0]
    )
    record("emcdr", emcdr_predict(bridges[best_ridge]), ridge=best_ridge)

    histories = liked_histories(domains.source, n_u, n_i, cfg.history_len, cfg.like_threshold)
    variants = {"ptupcdr": PTUPCDR_VARIANT, **{name: ABLATIONS[name] for name in cfg.ablations}}
    baseline_head = with_biases(target_mf, baseline.mean, baseline.item_bias)
    for name, (personal, map_embedding, map_offset, on_baseline) in variants.items():
        head = baseline_head if on_baseline else target_mf
        model, curve = fit_ptupcdr(
            source_mf,
            head,
            histories,
            target_train.of_users(split.train_users),
            val,
            cfg.bridge_training(seed),
            BridgeArchitecture(
                meta_hidden=cfg.meta_hidden, personal=personal, map_embedding=map_embedding, map_offset=map_offset
            ),
            source_offsets=baseline.alpha * baseline.source_offset if on_baseline else None,
        )

        def bridge_predict(u, i, model=model, head=head):
            vectors, offsets = bridged_users(model, u, histories)
            return predict(head, vectors, i, offsets)

        record(name, bridge_predict, epochs=float(int(np.argmin(curve))))
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


def run_warm_start(
    domains: TwoDomains,
    beta: float,
    n_known: int = 5,
    seed: int = 0,
    config: ColdStartConfig | None = None,
    epoch_grid: tuple[int, ...] = (10, 25, 50, 100, 200),
) -> dict[str, dict[str, float]]:
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
    mf = cfg.mf_training(cfg.mf_reg, seed)
    source_mf, target_mf = fit_mf(domains.source, n_u, n_i, mf), fit_mf(target_train, n_u, n_i, mf)
    histories = liked_histories(domains.source, n_u, n_i, cfg.history_len, cfg.like_threshold)
    model, _ = fit_ptupcdr(
        source_mf,
        target_mf,
        histories,
        target_train.of_users(split.train_users),
        val,
        cfg.bridge_training(seed),
        BridgeArchitecture(meta_hidden=cfg.meta_hidden),
    )

    def evaluate(ratings: Ratings, init: str, epochs: int) -> tuple[float, float, Ratings]:
        known, rest = reveal(ratings, n_known, seed + 1)
        users = np.unique(rest.users)
        bridged, offsets = bridged_users(model, users, histories)
        # The bridged offset stays fixed while the vector is fine-tuned; from zero there is no offset.
        start, offsets = (bridged, offsets) if init == "bridge" else (np.zeros_like(bridged), None)
        vectors = (
            fine_tune_vectors(target_mf, users, start, known, epochs, reg=cfg.mf_reg, offsets=offsets)
            if epochs
            else start
        )
        rows = np.searchsorted(users, rest.users)
        mae, rmse = mae_rmse(
            predict(target_mf, vectors[rows], rest.items, None if offsets is None else offsets[rows]), rest.ratings
        )
        return mae, rmse, rest

    test = domains.target.of_users(split.test_users)
    results = {}
    for name, init, grid in (
        ("ptupcdr_cold", "bridge", (0,)),
        ("target_mf_fitted", "zeros", epoch_grid),
        ("ptupcdr_warm_start", "bridge", epoch_grid),
    ):
        epochs = min(grid, key=lambda e: evaluate(val, init, e)[1])
        mae, rmse, rest = evaluate(test, init, epochs)
        results[name] = {
            "mae": mae,
            "rmse": rmse,
            "fine_tune_epochs": float(epochs),
            "n_users": float(np.unique(rest.users).size),
            "n_ratings": float(len(rest)),
        }
    return results
