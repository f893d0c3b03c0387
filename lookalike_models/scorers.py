"""The one face every audience model shows, and ``register``, which names a model for configs.

A scorer is fitted once per run on the data and all campaigns' *training* seeds, then asked per
campaign for candidates and their scores. Scores only need to rank users within one campaign.

Looking a model up by name is ``catalog.py``'s job (it imports every model); models never go through it,
so importing a model never imports the others.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from lookalike_models.dataset import CampaignSeeds, LookalikeData

SCORERS: dict[str, type[AudienceScorer]] = {}
# A model folder's subfolder for what the next night's ``refit`` reuses (a cache, not the tracked model:
# tasks/mlflow_logging.py leaves it out of MLflow).
REFRESH_STATE = "refresh_state"


class AudienceScorer(ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]
    # True when a user's score depends only on that user's state and the seeds' state: then a campaign's
    # previous top list stays valid for unchanged users (incremental refresh, lookalike_models/incremental.py).
    pointwise: ClassVar[bool] = False
    # True when ``fit`` learns from the training seeds' labels (not only from the data), so scoring a seed list
    # that leaves some of them out still reflects them: a validation cut must then fit a fresh copy on the cut.
    labels_in_fit: ClassVar[bool] = False

    def __init__(self, config: BaseModel | dict[str, Any] | None = None):
        if isinstance(config, BaseModel):
            config = config.model_dump()
        self.config = self.config_class.model_validate(check_params(self.config_class, config or {}, type(self).name))

    @abstractmethod
    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        """Learn whatever is shared across campaigns. Must only see training seeds."""

    def refit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds], previous: Path | None) -> int:
        """``fit`` reusing the per-user state of a previous run's model folder where activity did not change
        (incremental refresh). Returns how many users were (re-)embedded; by default all of them."""
        self.fit(data, train_seeds)
        return data.n_users

    def candidates(self, data: LookalikeData, seeds: CampaignSeeds) -> np.ndarray:
        """user_idx [n_candidates] worth scoring for this campaign; everyone by default."""
        return np.arange(data.n_users)

    @abstractmethod
    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        """float32 [n_candidates]: higher means more like the seeds."""

    def params(self) -> dict[str, Any]:
        """Facts of the fit a run should log beside the config (e.g. whether negatives were sampled)."""
        return {}

    def user_embeddings(self) -> np.ndarray | None:
        """float32 [n_users, d] when the model embeds users (written to Parquet and tracked), else None."""
        return None

    def serving_module(self, data: LookalikeData) -> tuple[Any, np.ndarray] | None:
        """(torch module, example float32 input) of a one-tensor user encoder to register, else None."""
        return None

    def save(self, folder: Path) -> None:
        """Persist what ``fit`` learned (tensors via ``torch.save``, arrays via ``np.savez``; no pickle).

        Scorers that cannot be saved are refitted where needed (cheap ones, like MinHash)."""
        raise NotImplementedError(f"{self.name} does not persist its state")

    def load(self, folder: Path, data: LookalikeData) -> None:
        """Restore what ``save`` wrote (``torch.load(..., weights_only=True)``, ``allow_pickle=False``)."""
        raise NotImplementedError(f"{self.name} does not persist its state")


def check_params(config_class: type[BaseModel], params: dict[str, Any], model: str) -> dict[str, Any]:
    """Refuse keys the model's config does not have: a typo (``treshold``) must not silently run defaults."""
    unknown = sorted(set(params) - set(config_class.model_fields))
    if unknown:
        raise ValueError(
            f"model '{model}' has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {sorted(config_class.model_fields)}"
        )
    return params


def validated_params(scorer: type[AudienceScorer], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as written, once ``scorer``'s config accepts them. Called from a pydantic field validator (a
    model's ``params``, a composite model's part), a refused key is reported at its whole path, e.g.
    ``models.0.params.extra_members.0.params.alpah``: configs are checked at any depth when read, while the
    mapping users wrote stays what runs, is logged and is cached on (no defaults filled in)."""
    scorer.config_class.model_validate(params)
    return params


def register(name: str):
    def decorate(cls: type[AudienceScorer]) -> type[AudienceScorer]:
        cls.name = name
        SCORERS[name] = cls
        return cls

    return decorate


def pick_scorer(classes: Iterable[type[AudienceScorer]], name: str, role: str) -> type[AudienceScorer]:
    """The class registered as ``name`` among ``classes``: the parts a composite model (ensemble member,
    warm part) may be built from, imported by that model itself rather than looked up in the catalog."""
    table = {cls.name: cls for cls in classes}
    if name not in table:
        raise ValueError(f"'{name}' cannot be {role}; one of {sorted(table)}")
    return table[name]


def top_k(candidates: np.ndarray, scores: np.ndarray, k: int, exclude: np.ndarray | None = None):
    """The k best (user_idx, score) pairs, best first, without sorting the whole candidate list."""
    if exclude is not None and exclude.size:
        keep = ~np.isin(candidates, exclude)
        candidates, scores = candidates[keep], scores[keep]
    finite = np.isfinite(scores)
    candidates, scores = candidates[finite], scores[finite]
    k = min(k, candidates.size)
    if k == 0:
        return candidates[:0], scores[:0]
    if k < candidates.size:
        # Total order (score desc, user_idx asc): of the users tied at the cut, the lowest ids get in, so
        # the audience is reproducible and equal to the merge of per-shard top lists.
        cut = np.partition(scores, candidates.size - k)[candidates.size - k]
        better = np.flatnonzero(scores > cut)
        tied = np.flatnonzero(scores == cut)
        tied = tied[np.argsort(candidates[tied], kind="stable")[: k - better.size]]
        part = np.concatenate([better, tied])
    else:
        part = np.arange(candidates.size)
    order = np.lexsort((candidates[part], -scores[part]))
    chosen = part[order]
    return candidates[chosen], scores[chosen]
