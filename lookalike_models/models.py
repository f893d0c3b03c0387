"""Imports every scorer module so that each registers itself under its config name."""

import lookalike_models.metaheac  # noqa: F401
from lookalike_models import baselines, minhash, reference  # noqa: F401
from lookalike_models.pinterest import scorers as pinterest_scorers  # noqa: F401
from lookalike_models.ptupcdr import scorer as ptupcdr_scorer  # noqa: F401
from lookalike_models.ralm import scorer as ralm_scorer  # noqa: F401
