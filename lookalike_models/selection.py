"""Champion/challenger: which model publishes audiences. Pure logic; the MLflow registry calls live in
tasks/registry.py. All candidates are compared on the same night's held-out split, so the numbers are
comparable; the champion is only replaced by a challenger that beats it by ``min_improvement``."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    champion: str
    promoted: bool
    reason: str


def choose_champion(
    tonight: dict[str, float], current: str | None, min_improvement: float = 0.0, eligible: set[str] | None = None
) -> Decision:
    """``tonight``: model name -> held-out metric (higher is better); ``current``: today's champion."""
    scores = {m: v for m, v in tonight.items() if not math.isnan(v) and (eligible is None or m in eligible)}
    if not scores:
        raise ValueError(f"no model has a held-out metric to compare: {tonight}")
    best = max(sorted(scores), key=scores.__getitem__)
    if current is None:
        return Decision(best, True, f"no champion yet: {best} ({scores[best]:.4f}) becomes champion")
    if current not in scores:
        return Decision(best, True, f"champion {current} was not evaluated tonight: {best} takes over")
    if best != current and scores[best] > scores[current] + min_improvement:
        return Decision(
            best,
            True,
            f"{best} ({scores[best]:.4f}) beats champion {current} "
            f"({scores[current]:.4f}) by more than {min_improvement}",
        )
    return Decision(
        current, False, f"champion {current} ({scores[current]:.4f}) kept; best challenger {best} ({scores[best]:.4f})"
    )
