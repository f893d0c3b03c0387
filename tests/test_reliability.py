"""Issue 11's broken nights and bad inputs, each reproduced on small data through the library or a task's
logic (``task.fn``, no Prefect server): wedged incremental state, degenerate and invalid campaigns,
skipped campaigns in the report, registry order, the run lock, one source of defaults, the MLflow link."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from prefect.logging import disable_run_logger

from lookalike_models.config import DataSource, SelectionConfig
from lookalike_models.contract import DataContractError, read_dataset
from lookalike_models.dataset import encode, feature_only_users, require_runnable_campaigns
from lookalike_models.locking import RunLockedError, exclusive_run
from lookalike_models.minhash import MinHashScorer
from lookalike_models.user_state import match_previous, state_mismatch, user_state
from tasks.results import ChampionDecision, PreviousRefresh, RunReport
from tests.conftest import tracked_night

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(synthetic_dir, tmp_path):
    return Path(shutil.copytree(synthetic_dir, tmp_path / "dataset"))


def with_seeds(folder: Path, rows: pl.DataFrame, keep_existing: bool = True) -> Path:
    seeds = pl.read_parquet(folder / "seeds.parquet")
    rows = rows.select(seeds.columns).cast(seeds.schema)
    (pl.concat([seeds, rows]) if keep_existing else rows).write_parquet(folder / "seeds.parquet")
    return folder


# ---- 1. a night whose ids changed type must not wedge the pipeline ----


def test_previous_state_with_other_id_type_means_everyone_is_new(synthetic_data):
    previous = user_state(synthetic_data).with_columns(pl.col("user_id").cast(pl.String))
    assert "user_id type changed from String to Int64" in state_mismatch(synthetic_data, previous)
    rows, unchanged = match_previous(synthetic_data, previous)  # was: polars join of i64 vs str crashed
    assert (rows == -1).all() and not unchanged.any()
    same_rows, same = match_previous(synthetic_data, user_state(synthetic_data))
    assert same.all() and (same_rows == np.arange(synthetic_data.n_users)).all()


def test_minhash_refit_from_mismatched_state_equals_a_full_fit(synthetic_data, tmp_path):
    yesterday = MinHashScorer()
    yesterday.fit(synthetic_data, {})
    yesterday.save(tmp_path / "model")
    state = pl.read_parquet(tmp_path / "model" / "user_state.parquet")
    state.with_columns(pl.col("user_id").cast(pl.String)).write_parquet(tmp_path / "model" / "user_state.parquet")
    today, full = MinHashScorer(), MinHashScorer()
    assert today.refit(synthetic_data, {}, tmp_path / "model") == synthetic_data.n_users
    full.fit(synthetic_data, {})
    assert (today.sigs == full.sigs).all()


def encoded_dir(folder: Path, out: Path) -> str:
    return str(encode(read_dataset(folder)).save(out))


def test_previous_refresh_falls_back_to_a_full_refresh(dataset, tmp_path):
    from tasks.refresh import REFRESH_FILE, previous_refresh

    strings = Path(shutil.copytree(dataset, tmp_path / "strings"))
    for name in ("interactions.parquet", "seeds.parquet", "user_features.parquet"):
        frame = pl.read_parquet(strings / name)
        frame.with_columns(pl.col("user_id").cast(pl.String)).write_parquet(strings / name)
    last_night, tonight = encoded_dir(strings, tmp_path / "e1"), encoded_dir(dataset, tmp_path / "e2")
    record = tmp_path / "out" / "runs" / "r1" / REFRESH_FILE
    record.parent.mkdir(parents=True)
    model = tmp_path / "model"
    model.mkdir()
    record.write_text(json.dumps({"data_dir": last_night, "models": {"minhash": str(model)}, "staging": None}))
    with disable_run_logger():
        assert previous_refresh.fn(str(tmp_path / "out"), "r1", tonight, True) == PreviousRefresh()
        # Same id types: the previous model is reused.
        record.write_text(
            json.dumps(
                {"data_dir": encoded_dir(dataset, tmp_path / "e3"), "models": {"minhash": str(model)}, "staging": None}
            )
        )
        assert previous_refresh.fn(str(tmp_path / "out"), "r1", tonight, True).models == {"minhash": str(model)}
        record.write_text("{not json")
        assert previous_refresh.fn(str(tmp_path / "out"), "r1", tonight, True).models == {}


# ---- 2, 3. degenerate and invalid campaigns ----


def test_a_campaign_of_the_whole_population_is_skipped_with_its_reason(dataset, synthetic_data):
    everyone = synthetic_data.user_ids
    with_seeds(
        dataset,
        pl.DataFrame({"campaign_id": ["everyone"] * len(everyone), "user_id": everyone, "label": [1] * len(everyone)}),
    )
    data = encode(read_dataset(dataset))
    assert "everyone" not in data.campaigns and "nothing is left to rank" in data.campaign_problems["everyone"]
    assert set(data.campaigns) == set(synthetic_data.campaigns)


def test_one_user_data_ends_in_one_clear_error(tmp_path):
    from lookalike_models.contract import write_dataset

    folder = write_dataset(
        tmp_path / "one",
        pl.DataFrame({"user_id": [7], "item_id": [1]}),
        pl.DataFrame({"campaign_id": ["solo"], "user_id": [7]}),
    )
    with pytest.raises(DataContractError, match="no campaign can run .*solo: .*nothing is left to rank"):
        require_runnable_campaigns(encode(read_dataset(folder)))


def test_every_campaign_invalid_lists_every_reason(dataset):
    """Unknown seeds, only label-0 rows, an unsafe id: one error naming all three (was: cannot concat empty list)."""
    from tasks.data import prepare_data

    users = pl.read_parquet(dataset / "seeds.parquet")["user_id"].head(3)
    with_seeds(
        dataset,
        pl.DataFrame(
            {"campaign_id": ["ghost", "no_seeds", "../x"], "user_id": [-1, users[1], users[2]], "label": [1, 0, 1]}
        ),
        keep_existing=False,
    )
    with disable_run_logger(), pytest.raises(DataContractError) as err:
        prepare_data.fn(DataSource(kind="folder", path=str(dataset)), "fp", str(dataset.parent / "work"))
    message = str(err.value)
    assert "no campaign can run (3 skipped" in message
    assert "ghost: " in message and "no_seeds: " in message and "../x: " in message


# ---- 4. skipped campaigns are part of the run's outcome ----


def test_skipped_campaigns_reach_the_summary_even_on_a_cached_rerun(dataset, tmp_path):
    from tasks.data import skipped_campaigns
    from tasks.run_summary import run_status, summary_markdown

    users = pl.read_parquet(dataset / "seeds.parquet")["user_id"]
    with_seeds(dataset, pl.DataFrame({"campaign_id": ["ghost"], "user_id": [-5], "label": [1]}))
    data_dir = encoded_dir(dataset, tmp_path / "encoded")  # what a cached prepare_data hands back
    with disable_run_logger():
        skipped = skipped_campaigns.fn(data_dir)
    assert list(skipped) == ["ghost"] and users.len() > 0
    decision = ChampionDecision(champion="minhash", promoted=False, reason="kept")
    text = summary_markdown("r1", "http://ui", RunReport(), {"c000": "p"}, {}, decision, skipped)
    assert "# Look-alike run `r1`: partial" in text and "skipped campaigns (invalid input): 1" in text
    assert "- skipped `ghost`: seeds.parquet: column 'user_id'" in text
    assert run_status({"c000": "p"}, {}, {}) == "complete" and run_status({}, {}, {}) == "failed"


# ---- 5, 6. input the contract used to accept silently ----


def test_feature_only_users_are_counted(dataset, synthetic_data):
    features = pl.read_parquet(dataset / "user_features.parquet")
    extra = features.head(50).with_columns(pl.col("user_id") + 10_000_000)
    pl.concat([features, extra]).write_parquet(dataset / "user_features.parquet")
    data = encode(read_dataset(dataset))
    assert data.n_users == synthetic_data.n_users + 50 and feature_only_users(data) == 50
    assert feature_only_users(synthetic_data) == 0


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("weight", lambda n: -np.ones(n), "negative"),
        ("rating", lambda n: -np.ones(n), "negative"),
        ("rating", lambda n: ["5"] * n, "must be numeric"),
    ],
)
def test_negative_or_text_weights_are_refused_under_their_own_name(dataset, column, values, message):
    frame = pl.read_parquet(dataset / "interactions.parquet").drop("weight", strict=False)
    frame.with_columns(pl.Series(column, values(frame.height))).write_parquet(dataset / "interactions.parquet")
    with pytest.raises(DataContractError, match=message) as err:
        read_dataset(dataset)
    assert err.value.column == column


# ---- 7, 13. registry: eligible models with files, aliases only after publishing, stale runs closed ----


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from tasks import tracking

    return tracking


def alias(tracking, name: str, which: str) -> str | None:
    try:
        version = tracking.client().get_model_version_by_alias(name, which)
    except Exception:
        return None
    return f"{version.tags['model_name']} v{version.version}"


def test_registry_registers_champion_and_challenger_only_once_published(mlflow_store, tmp_path):
    from tasks.registry import decide_champion, promote_champion

    selection = SelectionConfig(registered_model="reg", keep_versions=2)
    scores = {"minhash": 0.5, "memory_only": 0.9, "popularity": 0.2, "random": 0.05}
    children, trained, report = tracked_night(mlflow_store, tmp_path, scores, {"minhash", "popularity", "random"})
    with disable_run_logger():
        decision = decide_champion.fn(children, report, selection, trained, "reg")
        assert set(decision.model_runs) == {"minhash"}  # no reference models, no model without files
        assert decision.champion == "minhash" and not decision.versions
        # Killed before publishing (or nothing published): nothing is registered, no alias moves.
        promote_champion.fn(decision, selection, {})
        assert alias(mlflow_store, "reg", "champion") is None
        assert not mlflow_store.client().search_model_versions("name = 'reg'")
        mlflow_store.client().create_registered_model("reg")
        first = promote_champion.fn(decision, selection, {"c000": "path"})
        assert alias(mlflow_store, "reg", "champion") == "minhash v1" and first.versions == {"minhash": 1}
        # The same fit again (a cached night: the same run holds the files): no new version.
        assert promote_champion.fn(decision, selection, {"c000": "path"}).versions == {"minhash": 1}

        scores = {"minhash": 0.5, "minhash_deep": 0.4, "minhash_wide": 0.3, "random": 0.05}
        children, trained, report = tracked_night(mlflow_store, tmp_path, scores, set(scores))
        kept = decide_champion.fn(children, report, selection, trained, "reg")
        promote_champion.fn(kept, selection, {"c000": "path"})
    assert not kept.promoted and kept.challenger == "minhash_deep"
    assert kept.reason == "champion minhash (0.5000) kept; best challenger minhash_deep (0.4000)"
    assert alias(mlflow_store, "reg", "champion") == "minhash v2"  # tonight's fit of the kept champion
    assert alias(mlflow_store, "reg", "challenger") == "minhash_deep v3"  # only these two were registered
    versions = {int(v.version) for v in mlflow_store.client().search_model_versions("name = 'reg'")}
    assert versions == {2, 3}  # keep_versions=2: v1 (no alias any more) deleted


def test_each_output_root_has_its_own_registered_model(mlflow_store, tmp_path):
    from tasks.registry import claim_registered_model, registered_model_name

    default = SelectionConfig()
    a, b = registered_model_name(default, str(tmp_path / "a" / "runs")), registered_model_name(default, "b/runs")
    assert a != b and a.startswith("lookalike-audience-runs-") and b.startswith("lookalike-audience-runs-")
    assert registered_model_name(default, str(tmp_path / "a" / "runs" / ".")) == a  # by absolute path
    movielens = registered_model_name(default, str(tmp_path / "a" / "runs"), "movielens:/data/ml")
    assert movielens.startswith(a + "-movielens-") and movielens != registered_model_name(default, "a", "synthetic")
    with disable_run_logger():
        assert claim_registered_model.fn(default, str(tmp_path / "a" / "runs")) == a
        assert claim_registered_model.fn(default, str(tmp_path / "a" / "runs")) == a  # again: still its own
        named = SelectionConfig(registered_model="shared")
        claim_registered_model.fn(named, str(tmp_path / "a"))
        with pytest.raises(ValueError, match="holds the champion of output root"):
            claim_registered_model.fn(named, str(tmp_path / "b"))


def test_stale_running_runs_of_the_output_root_are_marked_killed(mlflow_store):
    from tasks.mlflow_runs import close_stale_runs

    def run(root: str, finished: bool = False) -> str:
        run_id = mlflow_store.start_run("exp", "night", {"lookalike.output_root": root})
        if finished:
            mlflow_store.end_run(run_id)
        return run_id

    dead, other_root, done, current = run("/a"), run("/b"), run("/a", finished=True), run("/a")
    with disable_run_logger():
        assert close_stale_runs("exp", "/a", current) == [dead]
    status = {r: mlflow_store.client().get_run(r).info.status for r in (dead, other_root, done, current)}
    assert status == {dead: "KILLED", other_root: "RUNNING", done: "FINISHED", current: "RUNNING"}


def test_run_artifacts_record_failed_and_skipped_campaigns(mlflow_store, synthetic_data, tmp_path):
    from tasks.mlflow_logging import log_run_artifacts

    data_dir = synthetic_data.save(tmp_path / "encoded")
    mlflow_run = mlflow_store.start_run("exp", "night", {})
    with disable_run_logger():
        decision = ChampionDecision(champion="minhash", promoted=True, reason="r")
        log_run_artifacts.fn(
            mlflow_run,
            RunReport(),
            str(tmp_path / "run"),
            str(data_dir),
            {},
            decision,
            {"minhash/c1": "ValueError: x"},
            {"ghost": "y"},
        )
    run = mlflow_store.client().get_run(mlflow_run)
    assert run.data.metrics["campaigns_failed"] == 1 and run.data.metrics["campaigns_skipped"] == 1
    assert run.data.tags["lookalike.status"] == "failed"
    problems = json.loads((tmp_path / "run" / "report" / "campaign_problems.json").read_text())
    assert problems == {"failed": {"minhash/c1": "ValueError: x"}, "skipped": {"ghost": "y"}}


# ---- 8. one run per output root ----


def test_a_second_run_on_the_same_output_root_is_refused_with_a_clear_message(tmp_path):
    with exclusive_run(tmp_path, "nightly-refresh"):
        with pytest.raises(RunLockedError, match=rf"output root {tmp_path} \(pid {os.getpid()} on .*nightly-refresh"):
            with exclusive_run(tmp_path):
                pass
        with exclusive_run(tmp_path / "other"):  # another output root runs
            pass
    with exclusive_run(tmp_path):  # released
        pass


def test_the_lock_of_a_killed_run_is_released(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from lookalike_models.locking import exclusive_run\n"
                f"with exclusive_run({str(tmp_path)!r}, 'doomed'):\n    print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match="doomed"):
            with exclusive_run(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with exclusive_run(tmp_path):  # kill -9 left no stale lock
        pass


@pytest.mark.slow
def test_two_processes_start_a_fresh_tracking_store_together(tmp_path):
    script = (
        "from tasks.mlflow_runs import tracking_store_initialisation\nfrom tasks import tracking\n"
        "with tracking_store_initialisation():\n    tracking.start_run('exp', 'night', {})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    runs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    assert [(p.wait(), p.stderr.read()[-300:])[0] for p in runs] == [0, 0]


# ---- 12. one source of defaults ----


def test_partial_deployment_parameters_take_the_rest_from_the_yaml_defaults():
    from flows.expand_audience import expand_audience
    from flows.nightly_refresh import nightly_refresh
    from lookalike_models.config import ExpandConfig, load_config, with_file_defaults

    given = nightly_refresh.validate_parameters({"config": {"publish": {"audience_fraction": 0.02}}})["config"]
    config = with_file_defaults(given)
    assert config.models == load_config().models and config.data == load_config().data
    assert config.publish.audience_fraction == 0.02
    assert with_file_defaults(load_config()) == load_config()
    # The file's reference model is dropped, not forced on a caller whose models do not include it.
    minhash = {"config": {"models": [{"name": "minhash", "model": "minhash"}]}}
    only_minhash = nightly_refresh.validate_parameters(minhash)
    assert with_file_defaults(only_minhash["config"]).evaluation.reference == ""

    inline = expand_audience.validate_parameters({"config": {"seed_user_ids": ["1000004"], "name": "vip"}})
    expand = with_file_defaults(inline["config"], "expand.yaml")
    assert expand.campaign_id == "" and expand.model == load_config(None, ExpandConfig, "expand.yaml").model


# ---- 14. operator-facing text ----


def test_the_mlflow_link_follows_the_tracking_uri(monkeypatch):
    from tasks.tracking import ui_base

    monkeypatch.delenv("LOOKALIKE_MLFLOW_UI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com/")
    assert ui_base() == "https://mlflow.example.com"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/mlflow.db")
    assert ui_base() == "http://127.0.0.1:5000"
    monkeypatch.setenv("LOOKALIKE_MLFLOW_UI", "http://mlflow.internal:8080/")
    assert ui_base() == "http://mlflow.internal:8080"


def test_no_throughput_for_instant_steps():
    from tasks.modeling import rate_note

    assert rate_note(20_000, 0.00001, "users") == ""
    assert rate_note(20_000, 4.0, "users") == " (5000 users/s)"


# ---- end to end through the CLI (Prefect test server): the nights of the issue ----


def cli_night(folder: Path, out: Path) -> int:
    from flows import cli

    return cli.main(
        [
            "nightly",
            "--set",
            "data.kind=folder",
            "--set",
            f"data.path={folder}",
            "--set",
            f"output_root={out}",
            "--set",
            "models=[{name: minhash, model: minhash}]",
            "--set",
            "selection.not_eligible=[]",
            "--set",
            "evaluation.reference=null",
            "--set",
            "evaluation.split_seeds=[0]",
            "--set",
            "experiment=reliability",
        ]
    )


@pytest.mark.slow
def test_a_night_with_skipped_campaigns_is_partial_every_time(
    prefect_and_mlflow, dataset, synthetic_data, tmp_path, capsys
):
    from mlflow.tracking import MlflowClient

    everyone = synthetic_data.user_ids
    with_seeds(
        dataset,
        pl.DataFrame(
            {
                "campaign_id": ["ghost", *["everyone"] * len(everyone)],
                "user_id": [-1, *everyone],
                "label": [1] * (len(everyone) + 1),
            }
        ),
    )
    for _ in range(2):  # the second night is served from the cache and must report the same
        assert cli_night(dataset, tmp_path / "out") == 3
        out = capsys.readouterr().out
        assert "skipped campaigns (invalid input): 2" in out and "- skipped `everyone`:" in out
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("reliability").experiment_id], "tags.`lookalike.status` = 'partial'"
    )
    assert [r.data.metrics["campaigns_skipped"] for r in runs] == [2, 2]
    published = (tmp_path / "out" / "audiences").glob("run_id=*/campaign_id=*")
    assert {p.name.split("=")[1] for p in published} == set(synthetic_data.campaigns)


@pytest.mark.slow
def test_ids_that_change_type_between_nights_do_not_wedge_the_pipeline(prefect_and_mlflow, dataset, tmp_path):
    from lookalike_models.publishing import read_latest

    strings = Path(shutil.copytree(dataset, tmp_path / "strings"))
    for name in ("interactions.parquet", "seeds.parquet", "user_features.parquet"):
        frame = pl.read_parquet(strings / name)
        frame.with_columns(pl.col("user_id").cast(pl.String)).write_parquet(strings / name)
    out = tmp_path / "out"
    assert cli_night(strings, out) == 0
    first = read_latest(out / "audiences")
    assert cli_night(dataset, out) == 0  # was: polars join of i64 vs str, every night after
    assert read_latest(out / "audiences") != first
