"""Tasks one by one, called through ``.fn`` (no flow, no Prefect server), and the typed records they hand on."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from prefect.logging import disable_run_logger
from prefect.serializers import JSONSerializer
from prefect.utilities.collections import visit_collection
from pydantic import ValidationError

from lookalike_models.config import ModelSpec, PublishConfig
from tasks.results import (
    ChampionDecision,
    ComparisonRow,
    ModelEvaluation,
    NightlyResult,
    PreviousRefresh,
    ReclusterResult,
    RefreshRecord,
    RunFolder,
    RunReport,
    SplitFile,
    StagedAudiences,
    StagingRecord,
    SummaryRow,
    TrainedModel,
)

SPEC = ModelSpec(name="minhash", model="minhash", params={"num_perm": 32})
STAGING = StagingRecord(model=SPEC.model_dump_json(), stage="/s", size=5, campaign_keys={"c000": "k0"})
TRAINED = TrainedModel(
    spec=SPEC,
    data_dir="/d",
    split=SplitFile(seed=3, path="/d/split.parquet"),
    model_dir="/m",
    fit_seconds=1.5,
    users_embedded=7,
    params={"model": "minhash", "num_perm": 32},
    history={"loss": [0.5, 0.25]},
)
SUMMARY_ROW = SummaryRow(
    model="minhash",
    seed_bucket="all",
    campaigns=4,
    metrics={"precision_at_5pct": 0.01, "recall_at_5pct": 0.5, "gauc": None},
)
COMPARISON_ROW = ComparisonRow(
    model="minhash",
    seed_bucket="all",
    metric="auc",
    campaigns=4,
    mean=0.9,
    reference="popularity",
    reference_mean=0.6,
    diff=0.3,
    ci_low=0.2,
    ci_high=0.4,
    wins=4,
)
RECORDS = [
    TRAINED,
    ModelEvaluation(model="minhash", split_seed=3, metrics_path=None, failed={"c9": "ValueError: x"}),
    StagedAudiences(
        model="minhash", staged={"c000": "/a.parquet"}, refresh_state=STAGING, incremental_campaigns=["c000"]
    ),
    PreviousRefresh(models={"minhash": "/m"}, staging=STAGING),
    ChampionDecision(champion="minhash", promoted=True, reason="best", versions={"minhash": 2}),
    NightlyResult(
        run_id="r",
        mlflow_run_id="m",
        published={},
        failed={},
        skipped={"g": "why"},
        status="failed",
        summary=[SUMMARY_ROW],
        drift={},
        data_dir="/d",
        champion=ChampionDecision(champion="minhash", promoted=False, reason="kept"),
        users_embedded={"minhash": 7},
        campaigns_refreshed=[],
    ),
    RunReport(summary=[SUMMARY_ROW], comparison=[COMPARISON_ROW], files=["/r/a.parquet"], not_evaluated={"c9": 1}),
    RunFolder(run_id="r", run_dir="/o/runs/r", output_root="/o", mlflow_run="m"),
    ReclusterResult(model="ralm", reclustered=[], campaigns=3, why="unchanged"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_results_survive_the_task_cache_as_their_own_type(record):
    # tasks/caching.py persists cached results with Prefect's JSON serializer: a cached re-run must hand on
    # the same typed record, not a dict.
    serializer = JSONSerializer()
    again = serializer.loads(serializer.dumps(record))
    assert type(again) is type(record) and again == record
    # Prefect walks every task parameter (dict(model) for pydantic models): that must leave it whole.
    assert visit_collection(record, lambda x: x, return_data=True) == record


def test_results_refuse_unknown_fields_and_are_read_only():
    with pytest.raises(ValidationError, match="extra"):
        ModelEvaluation(model="m", split_seed=0, metrics_path=None, staged={})
    with pytest.raises(ValidationError):
        TRAINED.model_dir = "/elsewhere"


def test_the_staging_record_keeps_the_field_names_the_library_reads():
    # incremental.load_previous_top and yesterday's refresh.json both spell the campaign keys "keys".
    assert STAGING.model_dump(by_alias=True)["keys"] == {"c000": "k0"}
    assert StagingRecord.model_validate(
        {"model": "m", "stage": "/s", "size": 5, "keys": {"c1": "k"}}
    ).campaign_keys == {"c1": "k"}


@pytest.fixture(scope="module")
def night(synthetic_data, tmp_path_factory):
    """Encoded synthetic data and one split, laid out as prepare_data and split_campaigns leave them."""
    from lookalike_models.evaluation import holdout_split, save_split

    root = tmp_path_factory.mktemp("work") / "data-x"
    data_dir = str(synthetic_data.save(root / "encoded"))
    train, heldout = holdout_split(synthetic_data.campaigns, synthetic_data.n_users, 0.3, 0)
    return data_dir, SplitFile(seed=0, path=str(save_split(train, heldout, root / "split-0.parquet")))


def test_train_evaluate_and_stage_hand_on_typed_records(night, tmp_path, monkeypatch):
    from tasks import modeling
    from tasks.modeling import evaluate_model, stage_audiences, train_model

    # Progress artifacts talk to a Prefect API; these tests run without one.
    monkeypatch.setattr(modeling, "create_progress_artifact", lambda *args, **kwargs: None)
    monkeypatch.setattr(modeling, "update_progress_artifact", lambda *args, **kwargs: None)

    data_dir, split = night
    publish = PublishConfig(audience_fraction=0.02)
    with disable_run_logger():
        trained = train_model.fn(SPEC, data_dir, split, str(tmp_path))
        evaluation = evaluate_model.fn(trained, str(tmp_path), _evaluation())
        staged = stage_audiences.fn(trained, str(tmp_path), publish)
        # Tonight's staging as tomorrow's "previous": same seeds and users, so every campaign is refreshed
        # from its previous top list, and the audiences are the same.
        again = stage_audiences.fn(
            trained, str(tmp_path), publish.model_copy(update={"keep_depth": 2.0}), staged.refresh_state
        )
    assert trained.spec == SPEC and Path(trained.model_dir).is_dir() and trained.users_embedded > 0
    metrics = pl.read_parquet(evaluation.metrics_path)
    assert evaluation.split_seed == 0 and set(metrics["split_seed"]) == {0} and not evaluation.failed
    assert metrics["recall_at_2pct"].mean() > 0.02  # MinHash finds converters better than a random 2%
    assert set(staged.staged) == set(staged.refresh_state.campaign_keys) and not staged.failed
    assert not staged.incremental_campaigns
    assert sorted(again.incremental_campaigns) == sorted(staged.staged)
    for cid, path in staged.staged.items():
        assert pl.read_parquet(again.staged[cid])["user_id"].equals(pl.read_parquet(path)["user_id"]), cid
    # The Dask backend's shard functions (tasks/distributed.py), run in-process: the same audiences.
    from tasks.distributed import merge_and_stage, plan_shards, score_shard

    campaigns, shards, size = plan_shards(data_dir, 3, publish.audience_fraction)
    assert len(shards) == 3 and set(campaigns) == set(staged.staged)
    parts = [score_shard(shard, SPEC, data_dir, split.path, trained.model_dir, campaigns, size, []) for shard in shards]
    sharded, failed = merge_and_stage(SPEC, data_dir, parts, size, str(tmp_path / "sharded"))
    assert not failed and set(sharded) == set(campaigns)
    for cid in campaigns:
        assert pl.read_parquet(sharded[cid]).equals(pl.read_parquet(staged.staged[cid])), cid


def _evaluation():
    from lookalike_models.config import EvaluationConfig

    return EvaluationConfig(audience_fractions=[0.02], split_seeds=[0])


def test_previous_refresh_reads_back_what_record_refresh_left(night, synthetic_data, tmp_path):
    from tasks.refresh import live_models, previous_refresh, record_refresh

    data_dir, split = night
    tonight = str(synthetic_data.save(tmp_path / "tonight"))  # same ids, another folder: a new night
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    trained = {"minhash": TRAINED.model_copy(update={"model_dir": str(model_dir), "data_dir": data_dir})}
    run_dir = tmp_path / "out" / "runs" / "r1"
    staged = StagedAudiences(model="minhash", refresh_state=STAGING)  # its stage folder is gone: not reused
    with disable_run_logger():
        record_refresh.fn(str(run_dir), data_dir, trained, staged, [SPEC])
        previous = previous_refresh.fn(str(tmp_path / "out"), "r1", tonight, True)
        assert previous == PreviousRefresh(models={"minhash": str(model_dir)})
        assert previous_refresh.fn(str(tmp_path / "out"), "r1", data_dir, True) == PreviousRefresh()  # same input
        assert previous_refresh.fn(str(tmp_path / "out"), "r1", tonight, False) == PreviousRefresh()
        (tmp_path / "out" / "audiences").mkdir(parents=True)
        (tmp_path / "out" / "audiences" / "LATEST").write_text("r1")
        live = live_models.fn(str(tmp_path / "out"))
    assert isinstance(live, RefreshRecord) and live.run_id == "r1" and live.specs == {"minhash": SPEC}
    assert live.staging == STAGING


def test_publish_audiences_copies_every_staged_file_then_marks_latest(tmp_path):
    from lookalike_models.publishing import read_latest
    from tasks.publishing import publish_audiences

    staged = {}
    for cid in ("c000", "c001"):
        staged[cid] = str(tmp_path / "stage" / f"{cid}.parquet")
        Path(staged[cid]).parent.mkdir(exist_ok=True)
        pl.DataFrame({"user_id": [1, 2], "campaign": [cid, cid]}).write_parquet(staged[cid])
    with disable_run_logger():
        published = publish_audiences.fn(staged, str(tmp_path / "out"), "r1")
    assert set(published) == {"c000", "c001"} and read_latest(tmp_path / "out" / "audiences") == "r1"
    for cid, path in published.items():
        assert Path(path).parent.name == f"campaign_id={cid}"
        assert pl.read_parquet(path).equals(pl.read_parquet(staged[cid]))
    assert not list((tmp_path / "out").rglob(".*tmp*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("slow share"), True),
        (FileNotFoundError("no input"), False),
        (PermissionError("denied"), False),
        (ValueError("bad input"), False),
        (KeyError("a bug"), False),
    ],
)
def test_tasks_retry_transient_io_errors_only(error, retried):
    from prefect.states import Failed

    from tasks.retrying import retry_on_io_error

    assert retry_on_io_error(None, None, Failed(data=error)) is retried


def test_current_champion_is_none_only_when_nothing_is_registered_or_promoted(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    from tasks import registry, tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert registry.current_champion("reg") is None  # no registered model yet
    client = tracking.client()
    client.create_registered_model("reg")
    assert registry.current_champion("reg") is None  # registered, never promoted
    run = tracking.start_run("exp", "night", {})
    version = client.create_model_version("reg", f"runs:/{run}/model", run, tags={"model_name": "minhash"})
    client.set_registered_model_alias("reg", "champion", version.version)
    assert registry.current_champion("reg") == "minhash"

    class Unreachable:
        def get_registered_model(self, name):
            raise MlflowException("tracking server unavailable", error_code=TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(tracking, "client", Unreachable)
    with pytest.raises(MlflowException, match="unavailable"):  # not mistaken for "no champion yet"
        registry.current_champion("reg")


def test_fitted_models_leave_memory_oldest_first_past_the_resident_budget(monkeypatch):
    from tasks import fitted_models as modeling

    monkeypatch.setattr(modeling, "_FITTED", modeling.OrderedDict())
    resident = {"gb": 1.0}
    monkeypatch.setattr(modeling, "resident_gb", lambda: resident["gb"])
    for name in ("a", "b", "c"):
        modeling.remember_fitted(name, object())
    assert list(modeling._FITTED) == ["a", "b", "c"]  # under the budget: all kept
    resident["gb"] = modeling._MAX_RESIDENT_GB + 1
    modeling.remember_fitted("d", object())
    assert list(modeling._FITTED) == ["d"]  # over it: the older ones go, the newest always stays
    modeling.make_room()  # before a fit: even the newest goes while over the budget
    assert not modeling._FITTED


def test_a_fit_first_drops_the_kept_models_that_reload_from_their_folders(monkeypatch):
    from lookalike_models.minhash import MinHashScorer
    from lookalike_models.scorers import AudienceScorer
    from tasks import fitted_models as modeling

    class InMemoryOnly(AudienceScorer):  # no load(): dropping it would cost a refit
        name, config_class, fit, score = "in_memory", MinHashScorer.config_class, None, None

    monkeypatch.setattr(modeling, "_FITTED", modeling.OrderedDict())
    monkeypatch.setattr(modeling, "resident_gb", lambda: 0.1)  # far under the budget
    modeling.remember_fitted("minhash", MinHashScorer())
    modeling.remember_fitted("memory", InMemoryOnly())
    modeling.make_room_for_fit()
    assert list(modeling._FITTED) == ["memory"]
