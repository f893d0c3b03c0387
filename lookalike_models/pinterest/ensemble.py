"""Pinterest ensemble (deWet & Ou, KDD 2019, sec. 4.3): an embedding scorer and the per-campaign classifier,
plus ``extra_members`` in validated mode (``item_ridge`` by default).

Two modes:
  - ``validated`` (default): members' per-campaign score ranks are blended with weights chosen on inner
    validation cuts of the campaigns' training seeds (``evaluation.inner_validation_cut``; ``validation_folds``
    cuts of their own, not the one the members tune their hyper-parameters on). Every member alone is one of
    the candidate weightings, so the ensemble is its best member unless a blend validated better; it is chosen
    per campaign, per seed-list bucket, or once for all campaigns (``scope``). Each member is fitted once, on
    all training seeds, and scores the cuts from their fit seeds (it reads a campaign's seeds when it scores
    it); a member that learns from the seed labels at fit time (``labels_in_fit``) is refitted on each cut.
    With ``stacker``, one more option competes: a logistic regression over the member ranks and the candidate's
    activity (``stacker.py``), whose weights move with the user's history length, measured out of fold.
  - ``paper``: the paper's rule: users in both members' top lists first, then a round-robin fill whose
    embedding share falls with the seed-list size. Kept as the reference; with fixed shares it fell 0.08
    recall@5% below its best member on real data (issue 10).

Its configuration (members, their parameters, the blend's knobs) is ``ensemble_config.py``.
"""

from __future__ import annotations

import itertools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.evaluation import campaign_rng, inner_validation_cut
from lookalike_models.inner_validation import ScopedChoice, competing_users, validation_recall
from lookalike_models.pinterest.embedding import EmbeddingScorer, encoder_curves, shared_encoder
from lookalike_models.pinterest.ensemble_config import MEMBER_SCORERS, EnsembleConfig, MemberSpec  # noqa: F401 (its home)
from lookalike_models.pinterest.paper_merge import embedding_share, merge_rankings
from lookalike_models.pinterest.stacker import ActivityStacker, CutRows, out_of_fold_recall, user_activity
from lookalike_models.progress import Progress
from lookalike_models.scorers import AudienceScorer, pick_scorer, register
from lookalike_models.threads import free_cores, torch_threads

log = logging.getLogger(__name__)
# Sorted reference scores kept per (member, seed list): 256 MB holds 100 campaigns x 3 members at 200k users.
REFERENCE_CACHE_BYTES = 256 * 2**20


def blend_grid(n_members: int, step: float) -> np.ndarray:
    """float64 [n_blends, n_members]: every weighting on a ``step`` grid whose weights sum to 1; the
    single members (one-hot rows) come first, so ties between equal validation scores keep a member alone."""
    ticks = int(round(1 / step))
    rows = [np.array(c) / ticks for c in itertools.product(range(ticks + 1), repeat=n_members) if sum(c) == ticks]
    return np.array(sorted(rows, key=lambda w: -w.max()))


def ranks_against(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """float64 [n]: each score's percentile rank in (0, 1] among the ``reference`` scores (a tie with k reference
    scores takes their mean rank; non-finite lowest). With ``reference`` = ``scores`` it is ``rank_scores``,
    bit for bit; with a fixed reference a user's rank does not depend on the other users scored with it."""
    return ranks_in_sorted(np.sort(_finite_or_lowest(reference)), scores)


def ranks_in_sorted(ordered: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``ranks_against`` with the reference already sorted, its non-finite scores already lowest (-inf)."""
    values = _finite_or_lowest(scores)
    below = np.searchsorted(ordered, values, side="left")
    up_to = np.searchsorted(ordered, values, side="right")
    return (below + up_to + 1) / (2.0 * max(ordered.size, 1))


def _finite_or_lowest(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    return np.where(np.isfinite(scores), scores, -np.inf)


def rank_scores(scores: np.ndarray) -> np.ndarray:
    """float64 [n]: each score's percentile rank in (0, 1] (ties share their mean rank; non-finite lowest),
    so members on different scales blend by position."""
    scores = np.asarray(scores, np.float64)
    finite = np.isfinite(scores)
    if not finite.all():
        scores = np.where(finite, scores, (scores[finite].min() - 1.0) if finite.any() else 0.0)
    return rankdata(scores) / max(scores.size, 1)


@register("pinterest_ensemble")
class PinterestEnsembleScorer(AudienceScorer):
    """Embedding scorer + per-campaign classifier (+ extra members): a validated blend, or the paper's merge."""

    config_class = EnsembleConfig

    def _members(self) -> list[AudienceScorer]:
        cfg = self.config
        specs = [(cfg.embedding_model, cfg.embedding_params), ("pinterest_classifier", cfg.classifier_params)]
        if cfg.mode == "validated":
            specs += [(spec.model, spec.params) for spec in cfg.extra_members]
        return [self._member(name, params) for name, params in specs]

    def _member(self, name: str, params: dict[str, Any]) -> AudienceScorer:
        """Embedding members get the ensemble's encoder config (one shared encoder); others take none."""
        cls = pick_scorer(MEMBER_SCORERS, name, "an ensemble member")
        if issubclass(cls, EmbeddingScorer):
            params = {**params, "encoder": self.config.encoder.model_dump()}
        return cls(params)

    def _fit_members(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> list[AudienceScorer]:
        members = self._members()
        needing = [m for m in members if isinstance(m, EmbeddingScorer) and getattr(m, "needs_encoder", True)]
        if needing:
            fitted = shared_encoder(data, self.config.encoder)  # trained once, handed to every embedding member
            for member in needing:
                member.use_encoder(fitted)
        for member in members:
            member.fit(data, train_seeds)
        return members

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        self.members = self._fit_members(data, train_seeds)
        if self.config.mode == "validated":
            self.choose_weights(data, train_seeds)

    def choose_weights(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        """Score each campaign's inner validation cut from the cut's fit seeds with every member, for every
        blend of ``blend_grid``, and keep the best blend per campaign, per bucket and over all campaigns.

        The members fitted on all training seeds are reused: they read a campaign's seeds when they score it,
        so the cut's validation seeds stay unseen. Only members whose fit learns from the seed labels
        (``labels_in_fit``, e.g. the affinity MLP) are fitted again, on the cut's fit seeds."""
        cfg = self.config
        self.blends = blend_grid(len(self.members), cfg.weight_step)
        folds: list[dict[str, np.ndarray]] = []
        cut_rows: list[dict[str, CutRows]] = []
        self.stacker = None
        # Cuts of their own (not the members' tuning cut, where each member's hyper-parameters already look
        # their best), averaged over ``validation_folds`` of them, since a blend chosen on one small cut
        # overrates the winner.
        for fold in range(cfg.validation_folds):
            cuts = {
                cid: inner_validation_cut(s, cfg.validation_share, cfg.seed + 1 + fold)
                for cid, s in train_seeds.items()
            }
            folds.append(self._fold_results(data, train_seeds, cuts, fold, rows := {}))
            cut_rows.append(rows)
        if cfg.stacker:
            folds = self._with_stacker(data, folds, cut_rows)
        results = {
            cid: np.mean([fold[cid] for fold in folds if cid in fold], 0)
            for cid in train_seeds
            if any(cid in fold for fold in folds)
        }
        self.validation = results
        self.seed_counts = {cid: s.size for cid, s in train_seeds.items()}
        self.choice = self.make_choice()
        mean = np.nanmean(np.array(list(results.values())), 0) if results else np.zeros(len(self.blends))
        log.info(
            "pinterest_ensemble: blend over all campaigns %s (validation recall by member %s, stacker %s)",
            self.describe(self.choice.overall),
            mean[: len(self.members)].round(3).tolist(),
            mean[-1].round(3) if self.stacker is not None else "-",
        )

    def _with_stacker(
        self, data: LookalikeData, folds: list[dict[str, np.ndarray]], cut_rows: list[dict[str, CutRows]]
    ) -> list[dict[str, np.ndarray]]:
        """Each campaign's cut results with the stacker's out-of-fold recall appended as the last option, and
        the stacker refitted on every cut's rows for scoring."""
        cfg, activity = self.config, user_activity(data)
        oof = out_of_fold_recall(cut_rows, activity, cfg.reference_share, cfg.stacker_c, cfg.seed)
        all_rows = [r for rows in cut_rows for r in rows.values()]
        self.stacker = ActivityStacker(c=cfg.stacker_c, seed=cfg.seed).fit(all_rows, activity)
        # Per fold, the stacker's recall is the campaign's out-of-fold mean (one number per campaign).
        return [{cid: np.append(r, oof.get(cid, np.nan)) for cid, r in fold.items()} for fold in folds]

    def _fold_results(
        self,
        data: LookalikeData,
        train_seeds: dict[str, CampaignSeeds],
        cuts: dict,
        fold: int,
        rows: dict[str, CutRows] | None = None,
    ) -> dict[str, np.ndarray]:
        """campaign_id -> validation recall of every blend on one cut per campaign; with ``stacker``, each
        campaign's member ranks, activity and labels stored in ``rows`` for the stacker."""
        cfg = self.config
        inner = {cid: (cut[0] if cut else train_seeds[cid]) for cid, cut in cuts.items()}
        members = [self._refit_on_cut(m, data, inner) if m.labels_in_fit else m for m in self.members]
        results: dict[str, np.ndarray] = {}
        evaluable = sorted(cid for cid, cut in cuts.items() if cut is not None)
        if cfg.scope == "all" and len(evaluable) > cfg.max_validation_campaigns:
            # One blend for all campaigns: a sample of them measures it (every member scores each one).
            rng = np.random.default_rng(cfg.seed + fold)
            evaluable = sorted(rng.choice(evaluable, cfg.max_validation_campaigns, replace=False))
        activity = user_activity(data) if cfg.stacker and rows is not None else None

        def blend_results(cid: str) -> np.ndarray:
            fit_seeds, val = cuts[cid]
            others = competing_users(
                data.n_users, fit_seeds, val, cfg.max_validation_users, campaign_rng(cfg.seed + 2 + fold, cid)
            )
            # Only the users the cut ranks: ranks among them order val against others as ranks among all do.
            scored = np.union1d(val, others)
            ranks = np.stack([rank_scores(m.score(data, fit_seeds, scored)) for m in members], 1)
            blended = ranks @ self.blends.T
            if activity is not None:
                rows[cid] = CutRows.sampled(ranks, activity[scored], np.isin(scored, val), fold)
            blended_val, blended_others = (
                blended[np.searchsorted(scored, val)],
                blended[np.searchsorted(scored, others)],
            )
            return np.array(
                [
                    validation_recall(blended_val[:, b], blended_others[:, b], cfg.reference_share)
                    for b in range(len(self.blends))
                ]
            )

        # Campaigns side by side on the free cores, each single-threaded (liblinear, torch and numpy's sorts
        # release the GIL); the results do not depend on the thread count.
        with (
            Progress(f"pinterest_ensemble blend validation, cut {fold + 1}", len(evaluable), "campaigns") as progress,
            torch_threads(1),
            ThreadPoolExecutor(free_cores()) as pool,
        ):
            for cid, result in zip(evaluable, pool.map(blend_results, evaluable)):
                results[cid] = result
                progress.advance()
        return results

    def _refit_on_cut(
        self, member: AudienceScorer, data: LookalikeData, inner: dict[str, CampaignSeeds]
    ) -> AudienceScorer:
        """A fresh copy of ``member`` fitted on the cuts' fit seeds (sharing the fitted encoder)."""
        copy = type(member)(member.config)
        if isinstance(copy, EmbeddingScorer) and isinstance(member, EmbeddingScorer):
            copy.use_encoder(member.fitted)
        copy.fit(data, inner)
        return copy

    def make_choice(self) -> ScopedChoice:
        """Blend per campaign, bucket and overall from the stored validation results and the config."""
        cfg = self.config
        n_members = int((self.blends == 1).sum())  # the one-hot rows: each member alone
        return ScopedChoice.from_results(
            self.validation,
            self.seed_counts,
            len(self.blends) + (getattr(self, "stacker", None) is not None),
            cfg.bucket_edges,
            n_protected=n_members,
            min_gain=cfg.min_gain,
        )

    def weights_for(self, seeds: CampaignSeeds) -> np.ndarray | None:
        """float64 [n_members]: the campaign's chosen blend (by the configured scope, falling back to the
        bucket's and then the overall choice for campaigns the fit did not see); None: the stacker."""
        pick = self.choice.pick(self.config.scope, seeds)
        return self.blends[pick] if pick < len(self.blends) else None

    def describe(self, option: int) -> list[float] | str:
        return self.blends[option].tolist() if option < len(self.blends) else "activity_stacker"

    @property
    def history(self) -> dict[str, list[float]]:
        embedding = next(
            (m for m in getattr(self, "members", []) if isinstance(m, EmbeddingScorer) and m.fitted is not None), None
        )
        return encoder_curves(getattr(embedding, "fitted", None))

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        if self.config.mode == "paper":
            emb, clf = (m.score(data, seeds, candidates) for m in self.members[:2])
            top = max(1, int(round(self.config.reference_share * data.n_users)))
            return merge_rankings(emb, clf, top, embedding_share(seeds.size, self.config))
        weights = self.weights_for(seeds)
        if weights is None:
            ranks = np.stack([self.member_ranks(m, data, seeds, candidates) for m in self.members], 1)
            return self.stacker.decision(ranks, user_activity(data)[candidates]).astype(np.float32)
        used = np.flatnonzero(weights > 0)
        if used.size == 1:  # one member: its own scores, nothing to blend
            return np.asarray(self.members[used[0]].score(data, seeds, candidates), np.float32)
        ranks = [weights[i] * self.member_ranks(self.members[i], data, seeds, candidates) for i in used]
        return np.sum(ranks, 0).astype(np.float32)

    def member_ranks(
        self, member: AudienceScorer, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray
    ) -> np.ndarray:
        """float64 [n_candidates]: the member's percentile ranks among the rank reference users' scores
        (``rank_reference``), not among ``candidates``: a shard of users gets the ranks the whole population
        gives them, so a sharded night publishes the local audience. Scoring everyone, the reference is the
        candidates themselves (no second scoring, ranks as ``rank_scores``)."""
        scores = member.score(data, seeds, candidates)
        reference = self.rank_reference(data)
        if reference.size == candidates.size and np.array_equal(reference, candidates):
            return ranks_against(scores, scores)
        return ranks_in_sorted(self.reference_scores(member, data, seeds, reference), np.float32(scores))

    def reference_scores(
        self, member: AudienceScorer, data: LookalikeData, seeds: CampaignSeeds, reference: np.ndarray
    ) -> np.ndarray:
        """float32, sorted: the member's scores of the reference users for these seeds, kept per seed list, so
        a worker scoring many shards of a campaign scores its reference once (bounded to REFERENCE_CACHE_BYTES)."""
        cache = self.__dict__.setdefault("_reference_cache", {})
        key = (self.members.index(member), seeds.campaign_id, seeds.positives.tobytes(), seeds.negatives.tobytes())
        if key not in cache:
            while cache and sum(v.nbytes for v in cache.values()) >= REFERENCE_CACHE_BYTES:
                cache.pop(next(iter(cache)))  # oldest first
            cache[key] = np.sort(_finite_or_lowest(member.score(data, seeds, reference)).astype(np.float32))
        return cache[key]

    def rank_reference(self, data: LookalikeData) -> np.ndarray:
        """user_idx, sorted: everyone up to ``rank_reference_users``, else a sample of that many users fixed by
        the config's seed (the same on every worker)."""
        n, cap = data.n_users, self.config.rank_reference_users
        if n <= cap:
            return np.arange(n)
        kept = self.__dict__.get("_rank_reference")
        if kept is None or kept[0] != n:  # drawn once per population, not per member and campaign
            kept = (n, np.sort(np.random.default_rng([self.config.seed, n]).choice(n, cap, replace=False)))
            self.__dict__["_rank_reference"] = kept
        return kept[1]

    def params(self) -> dict[str, Any]:
        """The blend and what each member chose on this run's seeds (its C, strength, epochs)."""
        chosen = {
            f"member_{member.name}_{key}": value
            for member in getattr(self, "members", [])
            for key, value in member.params().items()
        }
        embedding = next((m for m in getattr(self, "members", []) if isinstance(m, EmbeddingScorer) and m.fitted), None)
        if embedding is not None:
            chosen["member_encoder_best_epoch"] = embedding.fitted.best_epoch
        if self.config.mode != "validated" or not hasattr(self, "blends"):
            return chosen
        return {
            **chosen,
            "blend_overall": self.describe(self.choice.overall),
            "blend_by_bucket": {b: self.describe(i) for b, i in self.choice.by_bucket.items()},
        }

    def user_embeddings(self) -> np.ndarray | None:
        return self.members[0].user_embeddings()

    def serving_module(self, data: LookalikeData):
        return self.members[0].serving_module(data)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        for i, member in enumerate(self.members):
            member.save(folder / f"member_{i}_{member.name}")
        if self.config.mode == "validated":
            stacker = self.stacker.to_json() if self.stacker is not None else None
            saved = {"blends": self.blends.tolist(), "choice": self.choice.to_json(), "stacker": stacker}
            (folder / "blend.json").write_text(json.dumps(saved, indent=1))

    def load(self, folder: Path, data: LookalikeData) -> None:
        folder = Path(folder)
        self.members = self._members()
        for i, member in enumerate(self.members):
            member.load(folder / f"member_{i}_{member.name}", data)
        if self.config.mode == "validated":
            saved = json.loads((folder / "blend.json").read_text())
            self.blends, self.choice = np.array(saved["blends"]), ScopedChoice(**saved["choice"])
            stacker = saved.get("stacker")
            self.stacker = ActivityStacker.from_json(stacker) if stacker else None
