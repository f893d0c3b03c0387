"""The held-out metrics' names and which way is better: one place for evaluation (the columns it writes),
selection and the registry (which model wins), MLflow logging and the run summary (which columns they show).

Per campaign, evaluation measures ``precision_at_<size>`` and ``recall_at_<size>`` at every audience size
(``size_label``: ``5pct`` for 5% of the users), ``auc`` of held-out seeds against held-out non-seeds, and
``recall_at_<size>_<activity bucket>`` (``evaluation.ACTIVITY_BUCKETS``); the summary averages campaigns
per model and seed bucket, where the mean AUC is called ``gauc``.
"""

from __future__ import annotations

PRECISION_AT, RECALL_AT = "precision_at_", "recall_at_"
SIZE_METRIC_PREFIXES = (PRECISION_AT, RECALL_AT)  # precision and recall at an audience size
AUC, GAUC = "auc", "gauc"  # per campaign; mean over campaigns (the summary's)

# The audience sizes the Prefect form offers for selection.metric (``evaluation.audience_fractions``' usual).
STANDARD_SIZES_PCT = (1, 2, 5, 10, 20)
STANDARD_METRICS = [f"{kind}{size}pct" for kind in (RECALL_AT, PRECISION_AT) for size in STANDARD_SIZES_PCT] + [GAUC]
DEFAULT_SELECTION_METRIC = f"{RECALL_AT}5pct"

# Names MLflow logs beside them: the published champion's ``<m>`` on the parent run, a model's difference from
# the reference model with its 95% CI (``<m>.vs_ref``, ``_low``, ``_high``), and a model's fit time.
CHAMPION_PREFIX, VS_REFERENCE, FIT_SECONDS = "champion.", ".vs_ref", "fit_seconds"

# Every held-out metric above is better higher; these, logged beside them, are better lower.
LOWER_IS_BETTER = frozenset({FIT_SECONDS})


def size_label(fraction: float) -> str:
    """An audience size's label in metric names: 0.05 -> '5pct', 0.005 -> '0_5pct'."""
    return f"{fraction * 100:g}pct".replace(".", "_")


def precision_at(label: str) -> str:
    return f"{PRECISION_AT}{label}"


def recall_at(label: str) -> str:
    return f"{RECALL_AT}{label}"


def is_size_metric(name: str) -> bool:
    """Precision or recall at an audience size (an activity-bucket recall too)."""
    return name.startswith(SIZE_METRIC_PREFIXES)


def higher_is_better(name: str) -> bool:
    """Which way ``name`` improves; derived names (``champion.<m>``, ``<m>.vs_ref``) go the way of ``<m>``."""
    base = name.removeprefix(CHAMPION_PREFIX).split(VS_REFERENCE)[0]
    return base not in LOWER_IS_BETTER
