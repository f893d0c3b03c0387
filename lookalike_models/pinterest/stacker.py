"""An activity-aware stacker for the validated ensemble: a logistic regression over the members' percentile
ranks, each also multiplied by the candidate user's standardised log activity, fitted on inner-cut labels.

Why: a global rank blend cannot use complementary members when one is better for sparse-history users and
another for dense ones (e.g. ``item_ridge``'s scores grow with a user's item count, the TF-IDF classifier's
do not); the rank x activity terms let the blend's weights move with the candidate's activity. Its recall
on the cuts is measured out of fold (fitted on the other cuts), so it competes with the grid blends on
results it was not fitted to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression

from lookalike_models.dataset import LookalikeData
from lookalike_models.inner_validation import validation_recall


def user_activity(data: LookalikeData) -> np.ndarray:
    """float64 [n_users]: log(1 + distinct organic items) per user (the campaigns' own items are removed)."""
    return np.log1p(np.diff(data.user_items[0]).astype(np.float64))


def top_share(ranks: np.ndarray) -> np.ndarray:
    """-log(1 - percentile rank + 0.001): the top of a ranking spread out (the top 5% sit above 3), so a
    linear model of it separates within the audience rather than in the bulk below it. The floor is fixed,
    not 1/n, so a sampled cut and a full candidate list map a rank to the same value."""
    return -np.log(1.0 - ranks + 1e-3)


@dataclass
class CutRows:
    """One campaign's scored users on one inner cut: member percentile ranks [n, M], log activity [n] and
    which of them are the cut's validation seeds."""

    ranks: np.ndarray
    activity: np.ndarray
    is_val: np.ndarray

    @classmethod
    def sampled(
        cls, ranks: np.ndarray, activity: np.ndarray, is_val: np.ndarray, seed: int, max_others: int = 20_000
    ) -> CutRows:
        """The rows with the non-seeds sampled down to ``max_others`` (all validation seeds kept): the ranks
        are already computed among all scored users, and a sample places the recall's cutoff as well, at a
        bounded memory per campaign and cut (a 1M-user night keeps 32 campaigns x cuts of them)."""
        others = np.flatnonzero(~is_val)
        if others.size <= max_others:
            return cls(ranks, activity, is_val)
        keep = np.sort(np.r_[np.flatnonzero(is_val), np.random.default_rng(seed).choice(others, max_others, False)])
        return cls(ranks[keep], activity[keep], is_val[keep])


@dataclass
class ActivityStacker:
    """Logistic regression on [top_share(rank_m), top_share(rank_m) x z, z], z the standardised log activity."""

    c: float = 1.0
    max_negatives: int = 20_000
    seed: int = 0
    mean: float = 0.0
    scale: float = 1.0
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def features(self, ranks: np.ndarray, activity: np.ndarray) -> np.ndarray:
        z = ((activity - self.mean) / self.scale)[:, None]
        t = top_share(ranks)
        return np.hstack([t, t * z, z])

    def fit(self, rows: list[CutRows], population_activity: np.ndarray) -> ActivityStacker:
        """Pooled over campaigns, each campaign's seeds and its non-seeds weighted 1 each in total (a large
        campaign does not outweigh the rest); non-seeds sampled down to ``max_negatives`` per campaign."""
        self.mean = float(population_activity.mean())
        self.scale = float(population_activity.std()) or 1.0
        rng = np.random.default_rng(self.seed)
        xs, ys, ws = [], [], []
        for r in rows:
            pos, neg = np.flatnonzero(r.is_val), np.flatnonzero(~r.is_val)
            if pos.size == 0 or neg.size == 0:
                continue
            if neg.size > self.max_negatives:
                neg = rng.choice(neg, self.max_negatives, replace=False)
            keep = np.concatenate([pos, neg])
            xs.append(self.features(r.ranks[keep], r.activity[keep]))
            ys.append(np.r_[np.ones(pos.size), np.zeros(neg.size)])
            ws.append(np.r_[np.full(pos.size, 1.0 / pos.size), np.full(neg.size, 1.0 / neg.size)])
        if not xs:
            self.coef = np.zeros(0)
            return self
        w = np.concatenate(ws)
        model = LogisticRegression(C=self.c, max_iter=1000)
        model.fit(np.vstack(xs), np.concatenate(ys), sample_weight=w * w.size / w.sum())
        self.coef = model.coef_[0]
        return self

    def decision(self, ranks: np.ndarray, activity: np.ndarray) -> np.ndarray:
        """float64 [n]: the stacker's score (higher first); the intercept is left out, order is all that counts."""
        if self.coef.size == 0:  # nothing to fit on: the members' mean rank
            return ranks.mean(1)
        return self.features(ranks, activity) @ self.coef

    def to_json(self) -> dict:
        return {"c": self.c, "mean": self.mean, "scale": self.scale, "coef": self.coef.tolist()}

    @classmethod
    def from_json(cls, saved: dict) -> ActivityStacker:
        return cls(c=saved["c"], mean=saved["mean"], scale=saved["scale"], coef=np.array(saved["coef"]))


def out_of_fold_recall(
    folds: list[dict[str, CutRows]], population_activity: np.ndarray, audience_share: float, c: float, seed: int
) -> dict[str, float]:
    """campaign_id -> the stacker's validation recall averaged over the cuts, on each cut fitted on the
    other cuts' rows only (with one cut there is nothing else to fit on: NaN)."""
    out: dict[str, list[float]] = {}
    for k, fold in enumerate(folds):
        train = [r for j, other in enumerate(folds) if j != k for r in other.values()]
        if not train:
            continue
        stacker = ActivityStacker(c=c, seed=seed + k).fit(train, population_activity)
        for cid, r in fold.items():
            s = stacker.decision(r.ranks, r.activity)
            # the scored users are the competing users (validation seeds among them), as on the grid blends' cuts
            out.setdefault(cid, []).append(validation_recall(s[r.is_val], s, audience_share))
    return {cid: float(np.mean(v)) for cid, v in out.items()}
