"""Every audience model by the name configs use: ``build_scorer("minhash", params)``.

Importing this module imports every model module (each registers itself with ``scorers.register``); it sits
above all of them, and no model imports it.
"""

from __future__ import annotations

from typing import Any

import lookalike_models.metaheac  # noqa: F401
from lookalike_models import baselines, item_ridge, minhash, reference  # noqa: F401
from lookalike_models.pinterest import affinity, classifier, embedding, ensemble, lsh_scorers  # noqa: F401
from lookalike_models.ptupcdr import hybrid as ptupcdr_hybrid  # noqa: F401
from lookalike_models.ptupcdr import scorer as ptupcdr_scorer  # noqa: F401
from lookalike_models.ralm import scorer as ralm_scorer  # noqa: F401
from lookalike_models.scorers import SCORERS, AudienceScorer


def scorer_class(name: str) -> type[AudienceScorer]:
    """The scorer class registered as ``name``."""
    if name not in SCORERS:
        raise KeyError(f"unknown model '{name}'; known: {sorted(SCORERS)}")
    return SCORERS[name]


def build_scorer(name: str, params: dict[str, Any] | None = None) -> AudienceScorer:
    """An unfitted scorer of model ``name``; ``params`` are checked against its config (typos refused)."""
    return scorer_class(name)(params)
