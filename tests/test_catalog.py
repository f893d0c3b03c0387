"""The model catalog sits above every model: importing a model never imports the others through it, and
composite models (ensemble, hybrid) name their own parts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from lookalike_models.catalog import build_scorer, scorer_class
from lookalike_models.pinterest.ensemble import EnsembleConfig
from lookalike_models.ptupcdr.hybrid import PTUPCDRHybridConfig


def test_a_model_module_imports_without_the_catalog():
    code = (
        "import sys; import lookalike_models.pinterest.ensemble, lookalike_models.ptupcdr.hybrid; "
        "print('lookalike_models.catalog' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_composite_models_refuse_parts_they_do_not_know_when_configured():
    with pytest.raises(ValidationError, match="'ralm' cannot be an ensemble member"):
        EnsembleConfig(embedding_model="ralm")
    with pytest.raises(ValidationError, match="cannot be an ensemble member"):
        EnsembleConfig(extra_members=[{"model": "lsh_densty"}])
    with pytest.raises(ValidationError, match="'minhsh' cannot be the warm part"):
        PTUPCDRHybridConfig(warm_model="minhsh")


def test_the_catalog_builds_by_name_and_names_what_it_knows():
    assert scorer_class("pinterest_ensemble").__name__ == "PinterestEnsembleScorer"
    assert build_scorer("minhash", {"num_perm": 16}).config.num_perm == 16
    with pytest.raises(KeyError, match="unknown model 'minhsh'; known: .*'minhash'"):
        build_scorer("minhsh")
