"""What the operator meets in the Prefect and MLflow UIs: the run form, the deployments' settings, the numbers in
artifacts, the temporary server's first start, and the headless-Chromium check (``bench/ui_check.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def definitions(flow) -> dict:
    return flow.parameters.model_dump()["definitions"]


def test_the_custom_run_form_lists_what_users_change_first():
    from flows.expand_audience import expand_audience
    from flows.nightly_refresh import nightly_refresh

    defs = definitions(nightly_refresh)
    # The audience size first (one box), then the models (a tall list), then the data.
    assert list(defs["NightlyConfig"]["properties"])[:3] == ["publish", "models", "data"]
    assert list(defs["PublishConfig"]["properties"])[0] == "audience_fraction"
    assert list(defs["DataSource"]["properties"])[-1] == "synthetic"  # the generator's knobs come last
    assert {"item_ridge", "minhash", "item_logreg"} <= set(defs["ModelSpec"]["properties"]["model"]["enum"])
    assert "recall_at_5pct" in defs["SelectionConfig"]["properties"]["metric"]["enum"]
    assert list(definitions(expand_audience)["ExpandConfig"]["properties"])[:2] == ["campaign_id", "seed_user_ids"]


@pytest.mark.parametrize(
    "flow_module", ["flows.nightly_refresh:nightly_refresh", "flows.expand_audience:expand_audience"]
)
def test_no_form_field_is_a_switch_to_none(flow_module):
    """A `str | None` field renders as a type switch reading 'Property is type "None"': optional text is ""."""
    import importlib

    module, name = flow_module.split(":")
    switches = [
        f"{model}.{field}"
        for model, spec in definitions(getattr(importlib.import_module(module), name)).items()
        for field, prop in spec.get("properties", {}).items()
        if any(option.get("type") == "null" for option in prop.get("anyOf", []))
    ]
    assert switches == ["DataSource.synthetic"]  # the one optional block: the generator's knobs


def test_the_form_defaults_pass_the_servers_parameter_check():
    """Deployments enforce their parameter schema: the defaults the form starts from must satisfy it."""
    from prefect.utilities.schema_tools import validate

    from flows.expand_audience import expand_audience
    from flows.nightly_refresh import nightly_refresh

    for flow in (nightly_refresh, expand_audience):
        schema = flow.parameters.model_dump()
        defaults = {"config": schema["properties"]["config"]["default"]}
        validate(defaults, schema, raise_on_error=True, ignore_required=True)


def test_none_in_yaml_still_reads_as_empty():
    from lookalike_models.config import DataSource, EvaluationConfig, ExecutionConfig

    assert DataSource(kind="movielens", path=None).path == "" and DataSource(kind="movielens").synthetic is None
    assert DataSource().synthetic is not None  # kind synthetic: the generator's defaults
    assert EvaluationConfig(reference=None).reference == "" and ExecutionConfig(dask_address=None).dask_address == ""
    assert DataSource(shape={"max_users": None}).shape.is_identity
    from lookalike_models.config import NightlyConfig, apply_overrides

    real = NightlyConfig(data={"kind": "movielens"})  # its synthetic block is empty: --set still reaches into it
    assert apply_overrides(real, ["data.synthetic.n_users=500"]).data.synthetic.n_users == 500


def test_deployments_run_with_the_projects_prefect_home_and_show_schedules_as_they_are():
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in doc["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_HOME"] == "{{ $LOOKALIKE_PROJECT_DIR }}/.prefect", deployment["name"]
        # The worker passes its own storage path on: the deployment must name the project's.
        assert env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] == "{{ $LOOKALIKE_PROJECT_DIR }}/.prefect/storage"
        for schedule in deployment.get("schedules") or []:
            assert schedule.get("active", True), f"{deployment['name']}: an inactive schedule still shows as a badge"
    recluster = next(d for d in doc["deployments"] if d["name"] == "recluster")
    assert not recluster["schedules"]


def test_artifact_tables_round_their_numbers():
    from tasks.run_summary import rounded

    assert rounded([{"model": "a", "recall_at_5pct": 0.017499999999999998, "n": 3}]) == [
        {"model": "a", "recall_at_5pct": 0.0175, "n": 3}
    ]


def test_the_mlflow_links_open_the_model_training_view(monkeypatch, tmp_path):
    import json

    from tasks import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("LOOKALIKE_MLFLOW_UI", raising=False)
    monkeypatch.setattr(tracking, "ui_base", lambda: "http://127.0.0.1:5000")
    old = tracking.client().create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    assert tracking.experiment_id("old") == old  # an experiment made before: set up for training on first use
    assert tracking.client().get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    tracking.client().set_experiment_tag(old, "mlflow.experimentKind", "finetuning")  # a user's choice stays
    tracking.experiment_id("old")
    assert tracking.client().get_experiment(old).tags["mlflow.experimentKind"] == "finetuning"
    assert tracking.run_url("r1", "old").endswith(f"/#/experiments/{old}/runs/r1?workflowType=machine_learning")
    tracking.ensure_runs_view("old", "recall_at_10pct")
    saved = json.loads(tracking.client().get_experiment(old).tags["mlflow.sharedViewState.lookalike-runs"])
    assert saved["name"] == "Operator view"  # a saved view of MLflow's Views list
    assert "metrics.`champion.recall_at_10pct`" in json.loads(saved["state"])["selectedColumns"]
    assert "viewStateShareKey=lookalike-runs" in tracking.runs_table_url("old")


@pytest.mark.slow
def test_two_runs_on_a_fresh_prefect_home_create_its_database_once(tmp_path):
    """Both start the temporary server; the database is created under a lock, so neither sees the other's
    half-made tables (`table artifact already exists`)."""
    script = "from tasks.local_prefect import prepare_local_server, local_database\nprepare_local_server()\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    runs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    assert [(p.wait(), p.stderr.read()[-500:])[0] for p in runs] == [0, 0]
    assert (tmp_path / "home" / "prefect.db").exists()


# ---- bench/ui_check.py ----


def ui_check():
    sys.path.insert(0, str(ROOT / "bench"))
    import ui_check

    return ui_check


def test_ui_check_says_how_to_install_chromium_when_it_is_missing(monkeypatch, capsys):
    module = ui_check()
    monkeypatch.setattr(module, "find_chromium", lambda: None)
    assert module.main([]) == 2
    assert "apt-get install -y chromium" in capsys.readouterr().err


def test_headless_chromium_screenshots_and_reads_a_page(tmp_path):
    module = ui_check()
    chromium = module.find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    page = tmp_path / "page.html"
    page.write_text("<html><body><h1>Custom run</h1><script>document.body.append('rendered by js')</script></body>")
    dom = module.browse(chromium, page.as_uri(), tmp_path, "page", (400, 300))
    assert "rendered by js" in module.page_text(dom) and "Custom run" in module.page_text(dom)
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LOOKALIKE_UI_CHECK"), reason="the whole UI check: set LOOKALIKE_UI_CHECK=1")
def test_the_whole_ui_check(tmp_path):
    module = ui_check()
    if module.find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    # Its own process: the check points MLflow at its own store through the environment.
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ui_check.py"), "--out", str(tmp_path / "ui")],
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_a_torch_model_is_saved_without_the_local_version_warning(tmp_path, caplog, capfd):
    """MLflow warned twice per model that the CPU wheel's version label (2.13.0+cpu) is dropped from the pins."""
    import logging

    import numpy as np
    import torch

    from tasks.tracking import save_torch_model

    with caplog.at_level(logging.WARNING):
        folder = save_torch_model(torch.nn.Linear(3, 2), np.zeros((2, 3), np.float32), tmp_path / "encoder")
    assert "local version label" not in caplog.text + "".join(capfd.readouterr())
    requirements = (folder / "requirements.txt").read_text()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements and "+cpu" not in requirements
