"""Shared fixtures: small real-looking data sets, built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from lookalike_models.adapters import shared_data_root  # noqa: E402
from lookalike_models.contract import read_dataset  # noqa: E402
from lookalike_models.dataset import LookalikeData, encode  # noqa: E402
from lookalike_models.synthetic import SyntheticConfig, write_synthetic  # noqa: E402

SMALL_SYNTHETIC = SyntheticConfig(n_users=3000, n_items=800, n_campaigns=8, min_seeds=30, max_seeds=300, seed=11)


def require_shared(name: str):
    path = shared_data_root() / name
    if not path.exists():
        pytest.skip(f"real data set {path} is not present (set LOOKALIKE_DATA_ROOT)")
    return path


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    return write_synthetic(SMALL_SYNTHETIC, tmp_path_factory.mktemp("synthetic") / "dataset")


@pytest.fixture(scope="session")
def synthetic_data(synthetic_dir) -> LookalikeData:
    return encode(read_dataset(synthetic_dir))


@pytest.fixture(scope="session")
def movielens_dir(tmp_path_factory):
    from lookalike_models.adapters import movielens

    source = require_shared("movielens-100k")
    return movielens.build(tmp_path_factory.mktemp("movielens") / "dataset", source)


@pytest.fixture(scope="session")
def movielens_data(movielens_dir) -> LookalikeData:
    data = encode(read_dataset(movielens_dir))
    return data.without_campaign_leakage()


@pytest.fixture(scope="module")
def prefect_and_mlflow(tmp_path_factory):
    """Prefect's temporary test server and a temporary MLflow SQLite store, per test module."""
    from prefect.testing.utilities import prefect_test_harness

    root = tmp_path_factory.mktemp("tracking")
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    with prefect_test_harness(server_startup_timeout=120):
        yield root
    patch.undo()


def tracked_night(tracking, tmp_path, scores: dict[str, float], with_files: set[str]):
    """MLflow child runs and ``TrainedModel`` records of a fake night: one per model of ``scores`` (its
    recall@5% in the returned report), a model folder with a file for those in ``with_files``."""
    from lookalike_models.config import ModelSpec
    from tasks.results import RunReport, SplitFile, SummaryRow, TrainedModel

    children, trained, split = {}, {}, SplitFile(seed=0, path=str(tmp_path / "split.parquet"))
    for model in scores:
        children[model] = tracking.start_run("exp", model, {"model": model})
        folder = tmp_path / "models" / model
        if model in with_files:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "state.npz").write_bytes(b"x")
        trained[model] = TrainedModel(
            spec=ModelSpec(name=model, model="random"),
            data_dir=str(tmp_path),
            split=split,
            model_dir=str(folder),
            fit_seconds=0.0,
            users_embedded=0,
        )
    rows = [
        SummaryRow(model=m, seed_bucket="all", campaigns=1, metrics={"recall_at_5pct": v}) for m, v in scores.items()
    ]
    report = RunReport(summary=rows)
    return children, trained, report
