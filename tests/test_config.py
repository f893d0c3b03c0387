import pytest
from pydantic import ValidationError

from lookalike_models.catalog import build_scorer
from lookalike_models.config import CONF_DIR, NightlyConfig, load_config


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    from lookalike_models.config import ExpandConfig

    load_config(path, ExpandConfig if path.name == "expand.yaml" else NightlyConfig)


def test_a_misspelt_parameter_fails_instead_of_running_defaults():
    with pytest.raises(ValueError, match="no parameter 'treshold'"):
        build_scorer("minhash", {"num_perm": 16, "treshold": 0.9})
    assert build_scorer("minhash", {"num_perm": 16, "threshold": 0.9}).config.threshold == 0.9


def test_nightly_config_checks_model_names_and_params_when_read():
    with pytest.raises(ValidationError, match="unknown model 'minhsh'"):
        NightlyConfig.model_validate({"models": [{"name": "a", "model": "minhsh"}]})
    with pytest.raises(ValidationError, match="no parameter 'treshold'"):
        NightlyConfig.model_validate({"models": [{"name": "a", "model": "minhash", "params": {"treshold": 1}}]})
    with pytest.raises(ValidationError, match="num_perm"):
        NightlyConfig.model_validate({"models": [{"name": "a", "model": "minhash", "params": {"num_perm": "many"}}]})


def test_evaluation_reference_must_be_a_configured_model():
    with pytest.raises(ValidationError, match="evaluation.reference 'item_logreg'"):
        NightlyConfig.model_validate(
            {"models": [{"name": "minhash", "model": "minhash"}], "evaluation": {"reference": "item_logreg"}}
        )


def test_dask_address_must_name_a_scheduler():
    from lookalike_models.config import ExecutionConfig

    assert ExecutionConfig(dask_address="tcp://10.0.0.5:8786").dask_address == "tcp://10.0.0.5:8786"
    for wrong in ("10.0.0.5:8786", "tcp://10.0.0.5", "http://host:8786/api"):
        with pytest.raises(ValidationError, match="dask_address"):
            ExecutionConfig(dask_address=wrong)
