"""End to end through Prefect (ephemeral test server) and MLflow (temporary SQLite store)."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from lookalike_models.config import (
    DataSource,
    EvaluationConfig,
    ExpandConfig,
    ModelSpec,
    NightlyConfig,
    PublishConfig,
    SelectionConfig,
)
from lookalike_models.contract import DataContractError
from lookalike_models.publishing import read_latest

pytestmark = pytest.mark.slow  # each test runs whole flows on Prefect's temporary server


def nightly_config(folder, out, **overrides) -> NightlyConfig:
    defaults = dict(
        data=DataSource(kind="folder", path=str(folder)),
        models=[ModelSpec(name="minhash", model="minhash"), ModelSpec(name="popularity", model="popularity")],
        evaluation=EvaluationConfig(audience_fractions=[0.02, 0.05]),
        output_root=str(out),
        experiment="test-nightly",
        selection=SelectionConfig(),  # one registered model per output root
    )
    return NightlyConfig(**(defaults | overrides))


def test_nightly_flow_publishes_tracks_and_reruns_safely(prefect_and_mlflow, synthetic_dir, synthetic_data, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.nightly_refresh import nightly_refresh

    two_splits = EvaluationConfig(audience_fractions=[0.02, 0.05], split_seeds=[0, 1], reference="popularity")
    first = nightly_refresh(nightly_config(synthetic_dir, tmp_path, evaluation=two_splits))
    assert set(first.published) == set(synthetic_data.campaigns) and not first.failed
    assert first.champion.champion == "minhash" and first.champion.promoted
    audience = pl.read_parquet(first.published["c000"])
    assert audience.columns == ["user_id", "score", "rank", "source"]
    assert audience["rank"].to_list() == list(range(1, audience.height + 1))
    assert audience.height == round(0.05 * synthetic_data.n_users)
    assert (audience["score"].diff().drop_nulls() <= 0).all()
    seeds = synthetic_data.user_ids.gather(synthetic_data.campaigns["c000"].positives)
    assert not audience["user_id"].is_in(seeds.to_list()).any()  # known converters are not re-targeted

    run = MlflowClient().get_run(first.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["prefect.flow_run_id"]
    assert run.data.params["publish.model"] == "champion" and run.data.tags["lookalike.champion"] == "minhash"
    # The parent run charts the published champion night after night, not one bar per model and metric.
    minhash_overall = next(r for r in first.summary if r.model == "minhash" and r.seed_bucket == "all")
    assert run.data.metrics["champion.recall_at_5pct"] == pytest.approx(minhash_overall.metrics["recall_at_5pct"])
    assert "champion.gauc" in run.data.metrics and not any(k.startswith("minhash.") for k in run.data.metrics)
    assert run.data.tags["lookalike.dataset"].startswith("folder ")
    from tasks.registry import registered_model_name

    registered = registered_model_name(SelectionConfig(), str(tmp_path), "folder")  # its data: a contract folder
    assert run.data.tags["lookalike.champion_version"] == f"{registered} v1"
    experiment = MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "recall_at_5pct" in experiment.tags["mlflow.sharedViewState.lookalike-runs"]
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "report")}
    assert {"report/precision_recall_vs_audience_size.png", "report/comparison_to_reference.csv"} <= artifacts
    per_campaign = pl.read_parquet(tmp_path / "runs" / first.run_id / "report" / "metrics_per_campaign.parquet")
    assert set(per_campaign["split_seed"]) == {0, 1}  # both held-out splits evaluated
    [child] = MlflowClient().search_runs(
        [run.info.experiment_id],
        filter_string=(f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.model = 'minhash'"),
    )
    assert child.data.metrics["recall_at_5pct.vs_ref_low"] > 0  # minhash beats popularity, paired CI
    assert child.data.tags["lookalike.reference"] == "popularity"
    trained_minhash = child.data.metrics["fit_seconds"]
    duration = (child.info.end_time - child.info.start_time) / 1000  # the child run spans the fit
    assert duration == pytest.approx(trained_minhash, abs=0.01)
    files = {a.path for a in MlflowClient().list_artifacts(child.info.run_id, "model")}
    assert "model/model_spec.json" in files

    second = nightly_refresh(nightly_config(synthetic_dir, tmp_path, evaluation=two_splits))
    assert not second.champion.promoted and second.champion.previous_champion == "minhash"
    registry = MlflowClient().get_model_version_by_alias(registered, "champion")
    assert registry.tags["model_name"] == "minhash" and registry.version == second.champion.versions["minhash"]
    # A cached night (same input) logs no model files again and registers no new version.
    assert second.champion.versions == first.champion.versions
    [again] = MlflowClient().search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{second.mlflow_run_id}' and tags.model = 'minhash'",
    )
    assert again.data.tags["lookalike.model_files_run"] == child.info.run_id
    assert not MlflowClient().list_artifacts(again.info.run_id, "model")
    assert MlflowClient().get_run(second.mlflow_run_id).data.tags["lookalike.id_mapping_run"] == run.info.run_id
    assert second.run_id != first.run_id
    assert read_latest(tmp_path / "audiences") == second.run_id
    assert pl.read_parquet(first.published["c000"]).equals(audience)  # old run untouched
    assert pl.read_parquet(second.published["c000"])["user_id"].equals(audience["user_id"])  # deterministic
    assert second.drift["drift.overlap_jaccard"] == 1.0

    # Existing customers of c000 (its 10 best prospects yesterday) must not be targeted by c000 again.
    customers = tmp_path / "customers.parquet"
    pl.DataFrame({"user_id": audience["user_id"].head(10), "campaign_id": ["c000"] * 10}).write_parquet(customers)
    third = nightly_refresh(
        nightly_config(
            synthetic_dir,
            tmp_path,
            publish=PublishConfig(model="minhash", audience_fraction=0.05, exclusions=[str(customers)]),
        )
    )
    excluded_run = pl.read_parquet(third.published["c000"])
    assert excluded_run.height == audience.height
    assert not excluded_run["user_id"].is_in(audience["user_id"].head(10).to_list()).any()
    assert pl.read_parquet(third.published["c001"]).equals(pl.read_parquet(second.published["c001"]))
    assert 0.5 < third.drift["drift.overlap_jaccard"] < 1.0
    reach = pl.read_parquet(
        Path(third.published["c000"]).parents[3] / "runs" / third.run_id / "report" / "reach.parquet"
    )
    assert reach.filter(pl.col("campaign_id") == "c000")["audience_fraction"].to_list() == [0.02, 0.05]

    from tasks.registry import rank_runs

    ranked = rank_runs("test-nightly", "recall_at_5pct", top=50)
    assert ranked[0]["model"] == "minhash" and ranked[-1]["model"] == "popularity"
    assert [r["recall_at_5pct"] for r in ranked] == sorted((r["recall_at_5pct"] for r in ranked), reverse=True)


def test_a_failed_run_resumes_from_the_last_good_task(prefect_and_mlflow, synthetic_dir, tmp_path):
    from flows.nightly_refresh import nightly_refresh
    from lookalike_models.baselines import RandomScorer
    from lookalike_models.scorers import register

    @register("test_breaks_mid_run")
    class BreaksMidRun(RandomScorer):  # a valid config whose model fails while training (the flow re-validates)
        def fit(self, data, train_seeds):
            raise RuntimeError("broken mid-run")

    broken = nightly_config(synthetic_dir, tmp_path)
    broken.models.append(ModelSpec(name="breaks", model="test_breaks_mid_run"))
    with pytest.raises(RuntimeError, match="broken mid-run"):
        nightly_refresh(broken)
    work = tmp_path / "work"
    encoded = next(work.glob("data-*/encoded/meta.json"))
    model = next(work.glob("data-*/models/minhash-*/minhash.npz"))
    stamps = encoded.stat().st_mtime_ns, model.stat().st_mtime_ns
    fixed = nightly_refresh(nightly_config(synthetic_dir, tmp_path))
    assert fixed.published and (encoded.stat().st_mtime_ns, model.stat().st_mtime_ns) == stamps

    # Changed input files invalidate the cache: the data is prepared again.
    (synthetic_dir / "schema.yaml").touch()
    again = nightly_refresh(nightly_config(synthetic_dir, tmp_path))
    assert again.data_dir != fixed.data_dir


def test_dask_backend_publishes_the_same_audiences(prefect_and_mlflow, synthetic_dir, tmp_path):
    from flows.nightly_refresh import nightly_refresh
    from lookalike_models.config import ExecutionConfig

    local = nightly_refresh(nightly_config(synthetic_dir, tmp_path / "local"))
    dask = nightly_refresh(
        nightly_config(
            synthetic_dir, tmp_path / "dask", execution=ExecutionConfig(backend="dask", n_workers=2, shards=3)
        )
    )
    assert set(dask.published) == set(local.published)
    for cid, path in local.published.items():
        assert pl.read_parquet(dask.published[cid]).equals(pl.read_parquet(path)), cid


def test_bad_campaigns_fail_alone_and_publish_nothing(prefect_and_mlflow, synthetic_dir, tmp_path):
    from flows.nightly_refresh import nightly_refresh

    folder = shutil.copytree(synthetic_dir, tmp_path / "in")
    seeds = pl.read_parquet(folder / "seeds.parquet")
    bad = pl.DataFrame(
        {
            "campaign_id": ["../../escape", "ghost"],
            "user_id": [seeds["user_id"][0], -5],
            "label": pl.Series([1, 1], dtype=pl.Int8),
        }
    )
    pl.concat([seeds, bad]).write_parquet(folder / "seeds.parquet")
    result = nightly_refresh(nightly_config(folder, tmp_path / "out"))
    assert "ghost" not in result.published and "../../escape" not in result.published
    assert len(result.published) == seeds["campaign_id"].n_unique()
    everything = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    assert all(str(p).startswith(("in", "out")) for p in everything)  # nothing escaped the output root
    assert not any("escape" in str(p) or "ghost" in str(p) for p in everything)
    assert not any(".tmp" in p.name for p in everything)


def test_corrupt_input_fails_the_run_without_publishing(prefect_and_mlflow, synthetic_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.nightly_refresh import nightly_refresh

    folder = shutil.copytree(synthetic_dir, tmp_path / "in")
    (folder / "seeds.parquet").write_bytes(b"garbage")
    with pytest.raises(DataContractError, match="seeds.parquet"):
        nightly_refresh(nightly_config(folder, tmp_path / "out"))
    assert not (tmp_path / "out" / "audiences").exists()
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("test-nightly").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED"


def test_adhoc_expansion_of_an_inline_seed_list(prefect_and_mlflow, synthetic_dir, synthetic_data, tmp_path):
    from flows.expand_audience import expand_audience

    seeds = synthetic_data.user_ids.gather(synthetic_data.campaigns["c001"].positives[:40]).cast(pl.String)
    config = ExpandConfig(
        data=DataSource(kind="folder", path=str(synthetic_dir)),
        campaign_id=None,
        seed_user_ids=seeds.to_list(),
        name="vip_list",
        audience_fraction=0.01,
        output_root=str(tmp_path),
    )
    result = expand_audience(config)
    path = Path(result.published["vip_list"])
    assert path.parts[-2] == "campaign_id=vip_list" and pl.read_parquet(path).height == 30
    # The fit kept one progress artifact, finished at 100%.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    with get_client(sync_client=True) as client:
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    training = [a for a in progress if (a.description or "").startswith("training ")]
    assert training and all(float(a.data) == 100.0 for a in training)


@pytest.mark.parametrize("model", ["minhash", "item_ridge"])
def test_incremental_refresh_equals_a_full_refresh(prefect_and_mlflow, synthetic_dir, synthetic_data, tmp_path, model):
    """Day 2: a few non-seed users acted. The incremental run applies only them (MinHash re-signs them;
    item_ridge updates last night's Gram with their rows), and publishes exactly what a from-scratch run on
    day 2's data publishes. MinHash, pointwise, also refreshes campaigns from yesterday's top lists."""
    import numpy as np

    from flows.nightly_refresh import nightly_refresh

    day2 = tmp_path / "day2"
    shutil.copytree(synthetic_dir, day2)
    seeds = set(pl.read_parquet(synthetic_dir / "seeds.parquet")["user_id"].to_list())
    inter = pl.read_parquet(synthetic_dir / "interactions.parquet")
    rng = np.random.default_rng(5)
    active = [u for u in rng.choice(synthetic_data.user_ids.to_numpy(), 200, replace=False) if u not in seeds][:60]
    new_rows = inter.sample(5 * len(active), seed=5).with_columns(
        user_id=pl.Series(np.repeat(active, 5)).cast(inter.schema["user_id"])
    )
    pl.concat([inter, new_rows]).write_parquet(day2 / "interactions.parquet")

    one_model = {
        "models": [ModelSpec(name=model, model=model)],
        "selection": SelectionConfig(not_eligible=[]),  # one registered model per output root
    }
    nightly_refresh(nightly_config(synthetic_dir, tmp_path / "inc", **one_model))
    incremental = nightly_refresh(nightly_config(day2, tmp_path / "inc", **one_model))
    full = nightly_refresh(nightly_config(day2, tmp_path / "full", **one_model))

    assert 0 < incremental.users_embedded[model] <= len(active) < full.users_embedded[model]
    if model == "minhash":
        assert len(incremental.campaigns_refreshed) >= len(synthetic_data.campaigns) // 2
    else:  # the next night's Gram state stays in the work folder; MLflow gets the model, not the cache
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        run = client.get_run(incremental.mlflow_run_id)
        [child] = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.model = '{model}'",
        )
        files = [a.path for a in client.list_artifacts(child.info.run_id, "model")]
        assert files == ["model/item_ridge.npz", "model/model_spec.json"]
        # Only the live run's state stays on disk: last night's was removed once tonight's audiences were live.
        states = list((tmp_path / "inc" / "work").glob("*/models/*/refresh_state"))
        assert len(states) == 1 and "item_ridge" in states[0].parent.name
    assert not full.campaigns_refreshed
    for cid, path in full.published.items():
        assert pl.read_parquet(incremental.published[cid]).equals(pl.read_parquet(path)), cid


def test_embedding_models_track_user_embeddings_and_a_servable_encoder(
    prefect_and_mlflow, synthetic_dir, synthetic_data, tmp_path
):
    import mlflow.pyfunc
    import numpy as np
    from mlflow.tracking import MlflowClient

    from flows.nightly_refresh import nightly_refresh

    small = {"encoder": {"max_epochs": 2, "dim": 16}}
    result = nightly_refresh(
        nightly_config(
            synthetic_dir,
            tmp_path,
            models=[ModelSpec(name="lsh_density", model="lsh_density", params=small)],
            selection=SelectionConfig(registered_model=f"reg-emb-{tmp_path.name}", not_eligible=[]),
        )
    )
    child = MlflowClient().search_runs(
        [MlflowClient().get_run(result.mlflow_run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'",
    )[0]
    local = MlflowClient().download_artifacts(child.info.run_id, "model", str(tmp_path / "download"))
    embeddings = pl.read_parquet(Path(local) / "embeddings.parquet")
    assert embeddings.height == synthetic_data.n_users and embeddings["user_id"].equals(synthetic_data.user_ids)
    vectors = np.stack(embeddings["embedding"].to_numpy())
    assert vectors.shape[1] == 16 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)

    served = mlflow.pyfunc.load_model(f"runs:/{child.info.run_id}/model/user_encoder")
    assert served.metadata.signature is not None
    from mlflow.models import Model

    folder = Path(local) / "user_encoder"
    example = np.asarray(Model.load(folder).load_input_example(folder), np.float32)
    assert np.allclose(served.predict(example), vectors[: example.shape[0]], atol=1e-5)


def test_recluster_flow_refreshes_only_campaigns_whose_seeds_changed(
    prefect_and_mlflow, synthetic_dir, synthetic_data, tmp_path
):
    from flows.nightly_refresh import nightly_refresh
    from flows.recluster_centroids import recluster_centroids
    from lookalike_models.config import ReclusterConfig

    small = {
        "user_epochs": 1,
        "lookalike_epochs": 2,
        "lookalike_min_samples": 0,
        "dim": 16,
        "field_dim": 8,
        "transform_dim": 16,
        "k": 4,
    }
    nightly_refresh(
        nightly_config(
            synthetic_dir,
            tmp_path,
            models=[ModelSpec(name="ralm", model="ralm", params=small)],
            selection=SelectionConfig(registered_model=f"reg-ralm-{tmp_path.name}", not_eligible=[]),
        )
    )
    seeds = pl.read_parquet(synthetic_dir / "seeds.parquet").filter(pl.col("label") == 1)
    config = ReclusterConfig(seeds_path=str(tmp_path / "seeds.parquet"), output_root=str(tmp_path))
    seeds.write_parquet(config.seeds_path)
    first = recluster_centroids(config)["ralm"]  # the model was fitted on training seeds: all lists differ
    assert first.reclustered == sorted(synthetic_data.campaigns)

    in_c003 = set(seeds.filter(pl.col("campaign_id") == "c003")["user_id"].to_list())
    newcomers = [u for u in synthetic_data.user_ids.to_list() if u not in in_c003][:25]
    grown = pl.concat(
        [
            seeds,
            pl.DataFrame({"campaign_id": ["c003"] * 25, "user_id": newcomers})
            .with_columns(label=pl.lit(1))
            .select(seeds.columns)
            .cast(seeds.schema),
        ]
    )
    grown.write_parquet(config.seeds_path)
    second = recluster_centroids(config)["ralm"]
    assert second.reclustered == ["c003"] and second.campaigns == len(synthetic_data.campaigns)
