"""Fitted models kept in this process between the tasks that use them (training, evaluation, staging), under
a count and a resident-memory budget; a model dropped here is restored from its folder (or refitted)."""

from __future__ import annotations

import gc
import os
from collections import OrderedDict
from pathlib import Path

from lookalike_models.catalog import build_scorer
from lookalike_models.config import ModelSpec
from lookalike_models.evaluation import load_split
from lookalike_models.scorers import AudienceScorer
from tasks.data import load_data
from tasks.results import TrainedModel

# model_dir -> scorer fitted in this process, newest last. Bounded: a long-lived `lookalike serve` process
# runs night after night, and a model evicted here is restored from its folder (or refitted) on demand.
_FITTED: OrderedDict[str, AudienceScorer] = OrderedDict()
_MAX_FITTED = 8
# Fitted models stay in memory for evaluation and staging while the process is under this resident size;
# past it the oldest are dropped and reloaded from their folders when asked (at 1M users the default model
# set holds several GB of signatures, factors and features).
_MAX_RESIDENT_GB = float(os.environ.get("LOOKALIKE_MODEL_CACHE_GB", "3.0"))


def resident_gb() -> float:
    """This process's resident memory (Linux VmRSS), 0 where /proc is not there."""
    try:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def remember_fitted(model_dir: str, scorer: AudienceScorer) -> None:
    _FITTED[model_dir] = scorer
    _FITTED.move_to_end(model_dir)
    make_room(keep=1)


def make_room(keep: int = 0) -> None:
    """Drop the oldest kept models while more than ``_MAX_FITTED`` are kept or the process is over
    ``_MAX_RESIDENT_GB``, keeping at least the newest ``keep``."""
    while len(_FITTED) > _MAX_FITTED or (len(_FITTED) > keep and resident_gb() > _MAX_RESIDENT_GB):
        _FITTED.popitem(last=False)
        gc.collect()


def make_room_for_fit() -> None:
    """Before a fit: drop every kept model that restores itself from its folder (the fit needs the memory,
    and the nightly evaluates a model before the next one trains, so only staging reloads one), then the
    others while over the budget."""
    for model_dir in [d for d, scorer in _FITTED.items() if restores_itself(scorer)]:
        del _FITTED[model_dir]
    gc.collect()
    make_room()


def restores_itself(scorer: AudienceScorer) -> bool:
    """Whether the scorer's class loads a saved fit (else a dropped model is refitted when asked again)."""
    return type(scorer).load is not AudienceScorer.load


def fitted_scorer(spec: ModelSpec, data_dir: str, model_dir: str, split_path: str) -> AudienceScorer:
    """The scorer ``train_model`` fitted: from memory, else restored from ``model_dir``, else refitted
    (``scorer_of`` for a ``TrainedModel``)."""
    if model_dir in _FITTED:
        _FITTED.move_to_end(model_dir)
        return _FITTED[model_dir]
    scorer = build_scorer(spec.model, spec.params)
    try:
        scorer.load(Path(model_dir), load_data(data_dir))
    except (NotImplementedError, FileNotFoundError):
        scorer.fit(load_data(data_dir), load_split(split_path)[0])
    remember_fitted(model_dir, scorer)
    return scorer


def scorer_of(trained: TrainedModel) -> AudienceScorer:
    return fitted_scorer(trained.spec, trained.data_dir, trained.model_dir, trained.split.path)
