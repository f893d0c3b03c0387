"""Champion/challenger: which model publishes audiences. Pure logic; the MLflow registry calls live in
tasks/registry.py. All candidates are compared on the same night's held-out split, so the numbers are
comparable; the champion is only replaced by a challenger that beats it by ``min_improvement``. Which way a
metric is better: ``metric_names.higher_is_better``."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    champion: str
    promoted: bool
    reason: str


def choose_champion(
    tonight: dict[str, float],
    current: str | None,
    min_improvement: float = 0.0,
    eligible: set[str] | None = None,
    higher_is_better: bool = True,
) -> Decision:
    """``tonight``: model name -> held-out metric; ``current``: today's champion."""
    scores = {m: v for m, v in tonight.items() if not math.isnan(v) and (eligible is None or m in eligible)}
    if not scores:
        raise ValueError(f"no model has a held-out metric to compare: {tonight}")
    best = best_model(scores, higher_is_better)
    if current is None:
        return Decision(best, True, f"no champion yet: {best} ({scores[best]:.4f}) becomes champion")
    if current not in scores:
        return Decision(best, True, f"champion {current} was not evaluated tonight: {best} takes over")
    if best != current and beats(scores[best], scores[current], min_improvement, higher_is_better):
        return Decision(
            best,
            True,
            f"{best} ({scores[best]:.4f}) beats champion {current} "
            f"({scores[current]:.4f}) by more than {min_improvement}",
        )
    return Decision(
        current, False, f"champion {current} ({scores[current]:.4f}) kept; best challenger {best} ({scores[best]:.4f})"
    )


def best_model(scores: dict[str, float], higher_is_better: bool = True) -> str:
    """The model with the best score (ties: the first name in sorted order)."""
    pick = max if higher_is_better else min
    return pick(sorted(scores), key=scores.__getitem__)


def beats(challenger: float, champion: float, margin: float, higher_is_better: bool = True) -> bool:
    """Whether ``challenger`` is better than ``champion`` by more than ``margin``."""
    return challenger > champion + margin if higher_is_better else challenger < champion - margin
