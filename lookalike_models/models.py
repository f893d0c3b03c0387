"""Imports every scorer module so that each registers itself under its config name."""

from lookalike_models import baselines, minhash  # noqa: F401
from lookalike_models.ptupcdr import scorer as ptupcdr_scorer  # noqa: F401
