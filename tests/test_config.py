import copy
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from lookalike_models.catalog import build_scorer
from lookalike_models.config import (
    CONF_DIR,
    ExpandConfig,
    ModelSpec,
    NightlyConfig,
    ReclusterConfig,
    load_config,
    with_file_defaults,
)
from lookalike_models.pinterest.ensemble_config import MEMBER_SCORERS
from lookalike_models.ptupcdr.hybrid import WARM_SCORERS
from lookalike_models.ptupcdr.scorer import PTUPCDRBridgeScorer
from lookalike_models.scorers import SCORERS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    load_config(path, ExpandConfig if path.name == "expand.yaml" else NightlyConfig)


def test_a_misspelt_parameter_fails_instead_of_running_defaults():
    with pytest.raises(ValueError, match="no parameter 'treshold'"):
        build_scorer("minhash", {"num_perm": 16, "treshold": 0.9})
    assert build_scorer("minhash", {"num_perm": 16, "threshold": 0.9}).config.threshold == 0.9


def test_nightly_config_checks_model_names_and_params_when_read():
    with pytest.raises(ValidationError, match="unknown model 'minhsh'"):
        NightlyConfig.model_validate({"models": [{"name": "a", "model": "minhsh"}]})
    with pytest.raises(ValidationError, match=r"models\.0\.params\.treshold"):
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


# ---- the whole config tree refuses a misspelt key at any depth, naming its path ----

TYPO = "no_such_key"


def model_classes(annotation) -> list[tuple[type[BaseModel], tuple]]:
    """(config class, path step) inside a field's annotation: a model, a list of them (step 0), an optional one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, ())]
    found = []
    for arg in get_args(annotation):
        step = (0,) if get_origin(annotation) is list else ()
        found += [(cls, step + inner) for cls, inner in model_classes(arg)]
    return found


def nested_paths(cls: type[BaseModel], prefix: tuple = ()) -> list[tuple[tuple, type[BaseModel]]]:
    """(key path, config class) of ``cls`` and of every config class below it, through typed fields."""
    paths = [(prefix, cls)]
    for name, field in cls.model_fields.items():
        for sub, step in model_classes(field.annotation):
            paths += nested_paths(sub, (*prefix, name, *step))
    return paths


def document(path: tuple, leaf: dict) -> Any:
    """``leaf`` placed at ``path`` of an otherwise empty document (an int step: the first item of a list)."""
    for step in reversed(path):
        leaf = [leaf] if isinstance(step, int) else {step: leaf}
    return leaf


def assert_refused_at(validate, doc: Any, path: tuple) -> None:
    with pytest.raises(ValidationError) as caught:
        validate(doc)
    locs = [error["loc"] for error in caught.value.errors() if error["type"] == "extra_forbidden"]
    assert (*path, TYPO) in locs, (path, caught.value.errors())


def scorer_param_paths() -> list[tuple[str, tuple]]:
    """(scorer, key path inside its params) for every registered scorer and every config class below it."""
    return [(name, path) for name, cls in sorted(SCORERS.items()) for path, _ in nested_paths(cls.config_class)]


def composite_part_paths() -> list[tuple[dict, tuple]]:
    """(a composite model's params, key path of a part's config inside them): ensemble members, hybrid parts."""
    cases = []
    for member in MEMBER_SCORERS:
        # Embedding members take the ensemble's encoder (setting one is refused): their own keys only.
        inner = [p for p, _ in nested_paths(member.config_class) if not p or p[0] != "encoder"]
        cases += [({"extra_members": [{"model": member.name}]}, ("extra_members", 0, "params", *p)) for p in inner]
        cases += [({"embedding_model": member.name}, ("embedding_params", *p)) for p in inner]
        if member.name == "pinterest_classifier":
            cases += [({}, ("classifier_params", *p)) for p in inner]
    for warm in WARM_SCORERS:
        cases += [({"warm_model": warm.name}, ("warm_params", *p)) for p, _ in nested_paths(warm.config_class)]
    cases += [({}, ("bridge_params", *p)) for p, _ in nested_paths(PTUPCDRBridgeScorer.config_class)]
    return cases


def with_typo(params: dict, path: tuple) -> dict:
    """``params`` with the misspelt key added at ``path`` (lists and mappings of ``params`` kept)."""
    doc = copy.deepcopy(params)
    node: Any = doc
    for step in path:
        if isinstance(node, list):
            node = node[step]
        else:
            node = node.setdefault(step, {})
    node[TYPO] = 1
    return doc


@pytest.mark.parametrize("root", [NightlyConfig, ExpandConfig, ReclusterConfig], ids=lambda c: c.__name__)
def test_every_pipeline_config_refuses_a_misspelt_key_at_every_depth(root):
    for path, cls in nested_paths(root):
        assert cls.model_config.get("extra") == "forbid", cls
        assert_refused_at(root.model_validate, document(path, {TYPO: 1}), path)


@pytest.mark.parametrize(("scorer", "path"), scorer_param_paths(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_model_refuses_a_misspelt_parameter_when_the_config_is_read(scorer, path):
    params = document(path, {TYPO: 1}) if path else {TYPO: 1}
    spec = {"name": "m", "model": scorer, "params": params}
    assert_refused_at(NightlyConfig.model_validate, {"models": [spec]}, ("models", 0, "params", *path))
    assert_refused_at(ExpandConfig.model_validate, {"model": spec}, ("model", "params", *path))


@pytest.mark.parametrize(("params", "path"), composite_part_paths(), ids=str)
def test_composite_model_parts_refuse_a_misspelt_parameter_when_the_config_is_read(params, path):
    scorer = "ptupcdr_hybrid" if path[0] in ("warm_params", "bridge_params") else "pinterest_ensemble"
    spec = {"name": "m", "model": scorer, "params": with_typo(params, path)}
    assert_refused_at(NightlyConfig.model_validate, {"models": [spec]}, ("models", 0, "params", *path))


def test_valid_composite_configs_are_kept_as_written():
    params = {
        "embedding_model": "centroid_cosine",
        "embedding_params": {},
        "classifier_params": {"C_grid": [1.0]},
        "extra_members": [{"model": "item_ridge", "params": {"strength": 10.0}}],
        "encoder": {"dim": 16},
    }
    spec = NightlyConfig.model_validate({"models": [{"name": "e", "model": "pinterest_ensemble", "params": params}]})
    assert spec.models[0].params == params  # validated, not filled with defaults: what runs is what was written


def test_an_ensemble_member_may_not_set_its_own_encoder():
    for params in (
        {"embedding_params": {"encoder": {"dim": 8}}},
        {"classifier_params": {"encoder": {}}},
        {"extra_members": [{"model": "lsh_density", "params": {"encoder": {"dim": 8}}}]},
    ):
        with pytest.raises(ValidationError, match="sets its own 'encoder'.*the ensemble's `encoder`"):
            ModelSpec(name="e", model="pinterest_ensemble", params=params)
    ModelSpec(name="e", model="pinterest_ensemble", params={"encoder": {"dim": 8}})  # the ensemble's own: fine


def test_the_hybrid_refuses_turning_its_bridges_off():
    with pytest.raises(ValidationError, match="always uses the bridges"):
        ModelSpec(name="h", model="ptupcdr_hybrid", params={"bridge_params": {"use_bridge": False}})
    ModelSpec(name="h", model="ptupcdr_hybrid", params={"bridge_params": {"use_bridge": True}})


def test_the_run_form_schema_still_builds_with_params_as_json():
    schema = NightlyConfig.model_json_schema()
    params = schema["$defs"]["ModelSpec"]["properties"]["params"]
    assert params["type"] == "object" and params.get("additionalProperties", True) is True
    ExpandConfig.model_json_schema()


# ---- defaults are settled once, where a run starts ----


def test_defaults_are_filled_at_the_entry_points_only():
    """The flows (a deployment's or the CLI's run) and the CLI's config building fill defaults; tasks never."""
    fillers = re.compile(r"\b(with_file_defaults|load_config|apply_overrides)\(")
    for path in sorted((ROOT / "tasks").rglob("*.py")):
        assert not fillers.search(path.read_text()), f"{path.relative_to(ROOT)} re-fills config defaults"


@pytest.mark.parametrize(
    ("cls", "default", "overrides"),
    [
        (NightlyConfig, "nightly.yaml", ["publish.audience_fraction=0.02"]),
        (ExpandConfig, "expand.yaml", ["campaign_id=null", 'seed_user_ids=["1", "2"]']),
    ],
)
def test_the_flows_fill_in_leaves_a_command_line_config_as_built(cls, default, overrides):
    """What `lookalike ... --dry-run` prints is what runs: the flow's fill-in of file defaults (for deployment
    runs given partial parameters) changes nothing in a config the command built."""
    from flows.cli_config import build_config

    built = build_config(cls, None, default, overrides)
    assert with_file_defaults(built, default) == built
