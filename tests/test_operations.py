"""Issue 20, the operator's day: real data from a clone placed anywhere, the bad-input battery, Ctrl-C and
SIGTERM, what a ``kill -9`` leaves for the next run, data sets sharing one output root, and the CLI's last
lines. Library and task logic run directly (``task.fn``); the signal tests run the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from prefect.logging import disable_run_logger

from flows import cli
from lookalike_models.config import ModelSpec, SelectionConfig
from lookalike_models.contract import DataContractError, read_dataset
from lookalike_models.dataset import encode
from tasks.results import ChampionDecision, ReclusterResult, RunReport, SummaryRow
from tests.conftest import tracked_night

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(synthetic_dir, tmp_path):
    return Path(shutil.copytree(synthetic_dir, tmp_path / "dataset"))


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def no_flow(monkeypatch):
    """Any flow start fails the test: the checks under test must stop the command before one."""

    def started(config):
        raise AssertionError("a flow started")

    import flows.expand_audience
    import flows.nightly_refresh

    monkeypatch.setattr(flows.nightly_refresh, "nightly_refresh", started)
    monkeypatch.setattr(flows.expand_audience, "expand_audience", started)


# ---- 1. real data from a clone placed anywhere ----


@pytest.mark.parametrize("dry_run", [False, True])
def test_missing_real_data_names_the_data_root_before_any_flow(dry_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOOKALIKE_DATA_ROOT", str(tmp_path / "nowhere"))
    no_flow(monkeypatch)
    argv = ["nightly", "--config", str(ROOT / "conf" / "movielens.yaml")] + (["--dry-run"] if dry_run else [])
    start = time.monotonic()
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and time.monotonic() - start < 20 and "is valid" not in out
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "LOOKALIKE_DATA_ROOT" in err and "data.path" in err
    assert str(tmp_path / "nowhere" / "movielens-100k" / "u.data") in err


def test_a_wrong_data_path_is_named(tmp_path, monkeypatch, capsys):
    no_flow(monkeypatch)
    code, _, err = run_cli(
        ["expand", "--set", "data.kind=amazon", "--set", f"data.path={tmp_path}", "--seeds", "1"], capsys
    )
    assert code == 2 and f"data.path is {tmp_path}" in err and "Amazon-Books-Dense.inter" in err


def test_the_data_root_table_matches_the_adapters():
    from lookalike_models.adapters import DATA_SETS, amazon, tencent

    assert DATA_SETS["amazon"][1] == list(amazon.FILES.values())
    assert DATA_SETS["tencent"][1] == [tencent.DEFAULT_SAMPLE]


def test_the_library_refuses_missing_real_data_too(tmp_path, monkeypatch):
    """A deployment run (no CLI in front) gets the same one-line error from the flow."""
    from lookalike_models.config import DataSource
    from lookalike_models.sources import materialize

    monkeypatch.setenv("LOOKALIKE_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataContractError, match="LOOKALIKE_DATA_ROOT is .*u.data|u.data.*LOOKALIKE_DATA_ROOT"):
        materialize(DataSource(kind="movielens"), tmp_path / "work")


# ---- 2. the bad-input battery ----


def test_a_schema_yaml_syntax_error_names_the_file_and_the_line(dataset):
    (dataset / "schema.yaml").write_text("user_features:\n  single: [age_bucket\n  multi: [interests]\n")
    with pytest.raises(DataContractError) as err:
        read_dataset(dataset)
    assert err.value.file.endswith("schema.yaml") and "not valid YAML at line" in str(err.value)
    (dataset / "schema.yaml").write_text("- a list\n")
    with pytest.raises(DataContractError, match="must be a mapping"):
        read_dataset(dataset)


def test_a_broken_schema_yaml_stops_the_command_in_one_line(dataset, monkeypatch, capsys):
    (dataset / "schema.yaml").write_text("user_features:\n  single: [age_bucket\n  multi: [interests]\n")
    no_flow(monkeypatch)
    argv = ["nightly", "--set", "data.kind=folder", "--set", f"data.path={dataset}", "--dry-run"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "schema.yaml" in err and "at line 3" in err


@pytest.mark.parametrize(("first", "message"), [(None, "null timestamp"), (-5, "negative timestamp")])
def test_null_or_negative_timestamps_are_refused_with_the_row(dataset, first, message):
    frame = pl.read_parquet(dataset / "interactions.parquet")
    ts = frame["ts"].cast(pl.Int64).to_list()
    frame.with_columns(pl.Series("ts", [first, *ts[1:]], dtype=pl.Int64)).write_parquet(
        dataset / "interactions.parquet"
    )
    with pytest.raises(DataContractError) as err:
        read_dataset(dataset)
    assert err.value.column == "ts" and err.value.file.endswith("interactions.parquet") and message in str(err.value)
    assert isinstance(err.value.example, dict) and err.value.example["ts"] == first  # the row


def test_a_negative_datetime_is_refused_too(dataset):
    from datetime import datetime

    frame = pl.read_parquet(dataset / "interactions.parquet")
    stamps = [datetime(1969, 12, 31)] + [datetime(2024, 1, 1)] * (frame.height - 1)
    frame.with_columns(pl.Series("ts", stamps)).write_parquet(dataset / "interactions.parquet")
    with pytest.raises(DataContractError, match="negative timestamp"):
        read_dataset(dataset)


def test_inline_seeds_follow_the_campaigns_match_rate(synthetic_data):
    from lookalike_models.pipeline import resolve_seeds

    known = [str(u) for u in synthetic_data.user_ids.head(1).to_list()]
    with pytest.raises(DataContractError) as err:
        resolve_seeds(synthetic_data, None, [*known, "-1", "-2", "-3"], "vip", 0.5)
    assert "only 1 of 4 seeds are known users" in str(err.value) and "-1, -2, -3" in str(err.value)
    assert "data.min_seed_match_rate" in str(err.value)
    three = [str(u) for u in synthetic_data.user_ids.head(3).to_list()]
    seeds, unknown = resolve_seeds(synthetic_data, None, [*three, "-9"], "vip", 0.5)
    assert seeds.size == 3 and unknown == ["-9"]
    seeds, unknown = resolve_seeds(synthetic_data, None, [*known, "-1", "-2", "-3"], "vip", 0.25)
    assert seeds.size == 1 and unknown == ["-1", "-2", "-3"]


def test_expand_prints_the_ignored_seed_ids(monkeypatch, capsys):
    from tasks.results import ExpandResult

    def expand(config):
        return ExpandResult(run_id="r1", published={"vip": "/x/a.parquet"}, notes=["1 of 4 seed ids ... ignored: -9"])

    no_flow(monkeypatch)
    import flows.expand_audience
    import flows.local_server

    monkeypatch.setattr(flows.expand_audience, "expand_audience", expand)
    monkeypatch.setattr(cli, "quiet_user_error_tracebacks", lambda: None)
    monkeypatch.setattr(flows.local_server, "run_scoped_server", NullServer)
    code, out, err = run_cli(["expand", "--seeds", "1,2,3,-9", "--name", "vip"], capsys)
    assert code == 0 and out.strip() == "vip: /x/a.parquet" and "lookalike: warning: 1 of 4 seed ids" in err


class NullServer:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_set_below_a_plain_value_names_the_key(capsys):
    code, _, err = run_cli(["nightly", "--set", "output_root.x=1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'output_root.x'" in err and "'output_root' is a single value" in err


def test_the_cold_start_bench_table_takes_one_seed():
    sys.path.insert(0, str(ROOT))
    from bench.ptupcdr_cold_start import cold_start_table

    rows = [
        {"beta": 0.2, "seed": 0, "method": m, "mae": 0.8, "rmse": 1.0, "n_test_users": 5, "n_test_ratings": 9}
        | {"seconds": 1.0}
        for m in ("global_mean", "ptupcdr")
    ]
    text = cold_start_table(pl.DataFrame(rows), [0.2], ["global_mean", "ptupcdr"], [0], True)
    assert "| 20% | ptupcdr | 0.8000 (1 seed) | 1.0000 (1 seed) |" in text


# ---- 2. nights with too few seeds to evaluate ----


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from tasks import tracking

    return tracking


def test_a_night_with_nothing_to_evaluate_publishes_with_the_champion_or_refuses(mlflow_store, tmp_path):
    from tasks.registry import claim_registered_model, decide_champion, promote_champion

    selection = SelectionConfig(registered_model="reg", not_eligible=[])
    tiny = RunReport(not_evaluated={"c1": 1, "c2": 3})
    with disable_run_logger():
        claim_registered_model.fn(selection, str(tmp_path))
        children, trained, _ = tracked_night(
            mlflow_store, tmp_path, {"minhash": 0.0, "item_ridge": 0.0}, {"minhash", "item_ridge"}
        )
        with pytest.raises(DataContractError) as err:  # no champion yet, nothing pinned
            decide_champion.fn(children, tiny, selection, trained, "reg")
        assert "c1: 1 seed, c2: 3 seeds" in str(err.value) and "no champion yet" in str(err.value)
        assert "set publish.model" in str(err.value)
        pinned = decide_champion.fn(children, tiny, selection, trained, "reg", "item_ridge")
        assert pinned.champion == "item_ridge" and not pinned.evaluated and "publish.model item_ridge" in pinned.reason
        promote_champion.fn(pinned, selection, {"c1": "p"})  # nothing was compared: no alias moves
        scored = RunReport(
            summary=[SummaryRow(model="minhash", seed_bucket="all", campaigns=2, metrics={"recall_at_5pct": 0.4})]
        )
        promote_champion.fn(decide_champion.fn(children, scored, selection, trained, "reg"), selection, {"c1": "p"})
        children, trained, _ = tracked_night(
            mlflow_store, tmp_path, {"minhash": 0.0, "item_ridge": 0.0}, {"minhash", "item_ridge"}
        )
        kept = decide_champion.fn(children, tiny, selection, trained, "reg")
    assert kept.champion == "minhash" and not kept.evaluated
    assert kept.reason.startswith("not evaluated: no campaign has enough seeds to hold any out (c1: 1 seed")
    assert "published with the current champion minhash" in kept.reason


def test_the_summary_names_campaigns_published_without_evaluation(tmp_path):
    import numpy as np

    from lookalike_models.dataset import CampaignSeeds
    from lookalike_models.evaluation import holdout_split, save_split
    from tasks.run_report import unevaluated_campaigns
    from tasks.run_summary import summary_markdown

    campaigns = {"big": CampaignSeeds("big", np.arange(40)), "solo": CampaignSeeds("solo", np.array([50]))}
    train, heldout = holdout_split(campaigns, 100, 0.1, 0)
    path = save_split(train, heldout, tmp_path / "split.parquet")
    assert unevaluated_campaigns(str(path)) == {"solo": 1}
    decision = ChampionDecision(champion="minhash", promoted=False, reason="kept")
    report = RunReport(not_evaluated={"solo": 1})
    text = summary_markdown("r1", "MLflow run `abc`", report, {"solo": "p", "big": "p"}, {}, decision, {}, "/o/r")
    assert "Not evaluated (too few seeds to hold any out; published from all their seeds): solo: 1 seed" in text
    assert "Published audiences: 2 under `/o/r`" in text and "MLflow run `abc`" in text and "](" not in text


def tiny_seeds(folder: Path, per_campaign: dict[str, int] | None = None, at_most: int | None = None) -> Path:
    """Cut campaigns' seed lists: ``per_campaign`` to that many seeds, or every campaign to ``at_most``."""
    seeds = pl.read_parquet(folder / "seeds.parquet").filter(pl.col("label") == 1)
    keep = pl.int_range(pl.len()).over("campaign_id")
    if at_most is not None:
        seeds = seeds.filter(keep < at_most)
    for cid, n in (per_campaign or {}).items():
        seeds = seeds.filter((pl.col("campaign_id") != cid) | (keep < n))
    seeds.write_parquet(folder / "seeds.parquet")
    return folder


@pytest.mark.slow
def test_single_seed_campaigns_and_unevaluable_nights_through_the_cli(prefect_and_mlflow, dataset, tmp_path, capsys):
    from tests.test_reliability import cli_night

    out = tmp_path / "out"
    # One campaign of a single seed among normal ones: published from its seed, named as not evaluated.
    assert cli_night(tiny_seeds(dataset, {"c000": 1}), out) == 0
    text = capsys.readouterr().out
    assert "Not evaluated (too few seeds to hold any out; published from all their seeds): c000: 1 seed" in text
    assert (out / "audiences" / "LATEST").exists()
    # Every campaign with 3 seeds or fewer: nothing to compare; the champion of the first night publishes.
    assert cli_night(tiny_seeds(dataset, at_most=3), out) == 0
    text = capsys.readouterr().out
    assert "not evaluated: no campaign has enough seeds to hold any out (c000: 1 seed, c001: 3 seeds" in text
    assert "published with the current champion minhash" in text
    # The same night with no champion yet: refused in one line naming the campaigns.
    assert cli_night(dataset, tmp_path / "fresh") == 2
    # The command's own line (Prefect's console logs of the failed task may come around it).
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lookalike: ")]
    assert line.startswith("lookalike: error: seeds.parquet: column 'campaign_id': no campaign has enough seeds")
    assert "no champion yet" in line and "c001: 3 seeds" in line and "set publish.model" in line


# ---- 4. what a killed run leaves, cleaned by the next one ----


def test_leftovers_of_killed_runs_are_removed_and_published_runs_kept(tmp_path):
    from lookalike_models.publishing import COMPLETE_FILE, leftovers, mark_complete, mark_latest, remove_leftovers

    root = tmp_path / "audiences"

    def run(run_id: str, complete: bool) -> Path:
        folder = root / f"run_id={run_id}" / "campaign_id=c1"
        folder.mkdir(parents=True)
        (folder / "audience.parquet").write_bytes(b"x")
        if complete:
            mark_complete(root, run_id)
        return folder.parent

    legacy, done, partial = run("20260101T000000Z-a", False), run("20260102T000000Z-b", True), None
    mark_latest(root, "20260102T000000Z-b")
    partial = run("20260103T000000Z-c", False)
    tmp_file = done / "campaign_id=c1" / ".audience.parquet.tmp-1234abcd"
    tmp_file.write_bytes(b"half")
    (root / ".LATEST.tmp-99").write_bytes(b"x")
    assert set(leftovers(root)) == {partial, tmp_file, root / ".LATEST.tmp-99"}
    remove_leftovers(root)
    assert not partial.exists() and not tmp_file.exists() and legacy.exists() and (done / COMPLETE_FILE).exists()
    assert (root / "LATEST").read_text() == "20260102T000000Z-b" and leftovers(root) == []


def test_stale_runs_close_their_model_runs_too(mlflow_store):
    from tasks.mlflow_runs import close_stale_runs

    dead = mlflow_store.start_run("exp", "night", {"lookalike.output_root": "/a"})
    child = mlflow_store.start_run("exp", "minhash", {"model": "minhash"}, parent_run_id=dead)
    other = mlflow_store.start_run("exp", "night", {"lookalike.output_root": "/b"})
    other_child = mlflow_store.start_run("exp", "minhash", {"model": "minhash"}, parent_run_id=other)
    current = mlflow_store.start_run("exp", "night", {"lookalike.output_root": "/a"})
    with disable_run_logger():
        assert close_stale_runs("exp", "/a", current) == [dead]
    status = {r: mlflow_store.client().get_run(r).info.status for r in (dead, child, other, other_child, current)}
    assert status == {dead: "KILLED", child: "FAILED", other: "RUNNING", other_child: "RUNNING", current: "RUNNING"}


def test_an_interrupted_run_closes_its_mlflow_runs(mlflow_store):
    from prefect.exceptions import TerminationSignal

    from tasks.mlflow_runs import abandon_mlflow_run

    for exc, status in ((KeyboardInterrupt(), "KILLED"), (TerminationSignal(15), "KILLED"), (OSError(), "FAILED")):
        parent = mlflow_store.start_run("exp", "night", {})
        child = mlflow_store.start_run("exp", "minhash", {}, parent_run_id=parent)
        abandon_mlflow_run(parent, exc)
        assert mlflow_store.client().get_run(parent).info.status == status
        assert mlflow_store.client().get_run(child).info.status == "FAILED"


def test_a_stale_temporary_server_is_reaped(tmp_path):
    from flows.local_server import SERVER_APP, reap_stale_servers, record_path

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", SERVER_APP])
    try:
        record_path(tmp_path, server.pid).write_text(json.dumps({"pid": server.pid, "parent": gone.pid, "port": 1}))
        assert reap_stale_servers(tmp_path) == [server.pid]
        assert server.wait(timeout=10) is not None and not record_path(tmp_path, server.pid).exists()
    finally:
        server.kill()
    # A server whose run is alive (this process) is left alone.
    record_path(tmp_path, 999999).write_text(json.dumps({"pid": 999999, "parent": os.getppid(), "port": 1}))
    assert reap_stale_servers(tmp_path) == [] and record_path(tmp_path, 999999).exists()


# ---- 5. data sets sharing one output root ----


def test_a_previous_run_of_another_data_set_is_never_started_from(dataset, tmp_path):
    from tasks.refresh import REFRESH_FILE, previous_refresh

    other = Path(shutil.copytree(dataset, tmp_path / "other"))
    for name in ("interactions.parquet", "seeds.parquet", "user_features.parquet"):
        frame = pl.read_parquet(other / name)
        frame.with_columns(pl.col("user_id") + 50_000_000).write_parquet(other / name)
    tonight = str(encode(read_dataset(dataset)).save(tmp_path / "e1"))
    record = tmp_path / "out" / "runs" / "r1" / REFRESH_FILE
    record.parent.mkdir(parents=True)
    model = tmp_path / "model"
    model.mkdir()

    def last_night(data_dir: str, data_set: str | None) -> None:
        doc = {"data_dir": data_dir, "data_set": data_set, "models": {"minhash": str(model)}, "staging": None}
        record.write_text(json.dumps(doc))

    out = str(tmp_path / "out")
    with disable_run_logger():
        last_night(str(encode(read_dataset(other)).save(tmp_path / "e2")), "folder")  # same kind, other users
        found = previous_refresh.fn(out, "r1", tonight, True, "folder")
        assert found.models == {} and "only 0% of tonight's" in found.other_data_set
        last_night(str(encode(read_dataset(dataset)).save(tmp_path / "e3")), "movielens:/data/movielens-100k")
        found = previous_refresh.fn(out, "r1", tonight, True, "synthetic")
        assert found.models == {} and "movielens" in found.other_data_set and "synthetic" in found.other_data_set
        found = previous_refresh.fn(out, "r1", tonight, False, "synthetic")  # no incremental: still no drift
        assert found.other_data_set
        last_night(str(tmp_path / "e3"), "synthetic")
        assert previous_refresh.fn(out, "r1", tonight, True, "synthetic").models == {"minhash": str(model)}


def test_data_set_keys():
    from lookalike_models.config import DataSource
    from lookalike_models.sources import data_set_key

    assert data_set_key(DataSource()) == "synthetic"
    assert data_set_key(DataSource(kind="folder", path="/drops/2026-12-04")) == "folder"
    assert data_set_key(DataSource(kind="movielens", path="/x/ml")) == "movielens:/x/ml"


# ---- 6. the CLI's last lines ----


def test_the_last_lines_say_where_the_audiences_are_and_how_to_open_the_uis(monkeypatch):
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    monkeypatch.delenv("LOOKALIKE_MLFLOW_UI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with temporary_settings({PREFECT_HOME: ROOT / ".prefect", PREFECT_API_URL: None}):
        text = cli.where_to_look("r1", "/abs/runs/audiences/run_id=r1", "abc123", "tidy-fox (1234)")
    assert "audiences: /abs/runs/audiences/run_id=r1" in text and "MLflow run abc123" in text
    assert "`make mlflow-ui`" in text and "`make prefect-server`" in text and "tidy-fox (1234)" in text
    assert "#/experiments" not in text
    # Stores elsewhere than the project's: the commands name them.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x/mlflow.db")
    with temporary_settings({PREFECT_HOME: "/tmp/x/prefect", PREFECT_API_URL: None}):
        text = cli.where_to_look("r1", None, "abc123", "tidy-fox (1234)")
    assert "audiences: none published" in text
    assert "`mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db" in text
    assert "`PREFECT_HOME=/tmp/x/prefect prefect server start`" in text


def test_compare_rounds_and_dates_its_rows():
    rows = [{"model": "minhash", "recall_at_5pct": 0.123456789012, "start": 1_765_000_000_000, "run_id": "ab"}]
    text = cli.compare_table([rows[0] | {"parent": "p"}], "recall_at_5pct", "exp")
    assert "| minhash | 0.1235 | 2025-12-06 05:46 | ab | p |" in text
    assert cli.compare_table([], "recall_at_5pct", "exp") == "no model runs with recall_at_5pct in experiment exp"


def test_recluster_says_what_it_did_or_why_not(tmp_path):
    from lookalike_models.config import ReclusterConfig
    from lookalike_models.publishing import mark_latest

    mark_latest(tmp_path / "audiences", "r7")
    config = ReclusterConfig(seeds_path="s.parquet", output_root=str(tmp_path))
    assert "nothing to re-cluster: the live run r7" in cli.recluster_summary({}, config)
    none = {"ralm": ReclusterResult(model="ralm", reclustered=[], campaigns=0, why="no campaign ... knows")}
    assert (
        cli.recluster_summary(none, config) == "lookalike: ralm: 0 of 0 campaigns re-clustered: no campaign ... knows"
    )
    some = {"ralm": ReclusterResult(model="ralm", reclustered=["c1"], campaigns=8)}
    assert cli.recluster_summary(some, config) == "lookalike: ralm: 1 of 8 campaigns re-clustered (c1)"


# ---- 3, 4. signals and kill -9, on the real command in a subprocess ----


def cli_process(tmp_path: Path, *extra: str, new_session: bool = False) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "flows.cli", "nightly", "--set", f"output_root={tmp_path / 'out'}"]
    argv += ["--set", "models=[{name: minhash, model: minhash}, {name: popularity, model: popularity}]"]
    argv += ["--set", "evaluation.reference=null", "--set", "selection.registered_model=reg-signals"]
    argv += ["--set", "data.synthetic.n_users=5000", "--set", "data.synthetic.n_items=1000"]
    return subprocess.Popen(
        [*argv, *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )


def wait_for(process: subprocess.Popen, text: str, timeout: float = 240) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"'{text}' never appeared:\n{''.join(lines[-40:])}")


def server_pid(tmp_path: Path) -> int:
    from flows.local_server import RECORDS

    [record] = (tmp_path / "prefect").glob(RECORDS)
    return json.loads(record.read_text())["pid"]


def alive(pid: int) -> bool:
    from flows.local_server import _alive

    return _alive(pid)


def prefect_states(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        return [row[0] for row in db.execute("select state_type from flow_run")]


def mlflow_statuses(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        return [row[0] for row in db.execute("select status from runs")]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_stops_the_night_within_seconds_and_publishes_nothing(tmp_path, signum):
    night = cli_process(tmp_path, new_session=True)
    try:
        wait_for(night, "encoded ")  # data prepared: training, evaluation and publishing are ahead
        server = server_pid(tmp_path)
        sent = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(night.pid, signal.SIGINT)  # as Ctrl-C: the whole foreground process group
        else:
            night.send_signal(signal.SIGTERM)
        rest, _ = night.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        night.kill()
    assert night.returncode == 128 + signum and took < 30, rest
    assert "interrupted" in rest and "Unable to connect" not in rest and "ConnectError" not in rest
    audiences = tmp_path / "out" / "audiences"
    assert not (audiences / "LATEST").exists() and not list(audiences.glob("run_id=*/*/audience.parquet"))
    assert prefect_states(tmp_path) == ["CRASHED"]
    assert "KILLED" in mlflow_statuses(tmp_path) and "RUNNING" not in mlflow_statuses(tmp_path)
    time.sleep(1)
    assert not alive(server)


@pytest.mark.slow
def test_after_a_kill_9_the_server_dies_and_the_next_run_cleans_up(tmp_path):
    from mlflow.tracking import MlflowClient

    night = cli_process(tmp_path)
    try:
        wait_for(night, "encoded ")
        server = server_pid(tmp_path)
        night.send_signal(signal.SIGKILL)
        night.wait(timeout=10)
    finally:
        night.kill()
    deadline = time.monotonic() + 15
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(server)  # died with its run (was: kept running under PID 1)
    assert prefect_states(tmp_path) == ["RUNNING"] and mlflow_statuses(tmp_path) == ["RUNNING"]
    # What a run killed while logging and publishing leaves, beside the dead run's own RUNNING state:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [dead] = client.search_runs([client.get_experiment_by_name("lookalike-nightly").experiment_id])
    child = client.create_run(dead.info.experiment_id, tags={"mlflow.parentRunId": dead.info.run_id}).info.run_id
    partial = tmp_path / "out" / "audiences" / "run_id=29990101T000000Z-dead" / "campaign_id=c000"
    partial.mkdir(parents=True)
    (partial / ".audience.parquet.tmp-0badf00d").write_bytes(b"half")

    again = cli_process(tmp_path)
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out[-3000:]
    assert sorted(prefect_states(tmp_path)) == ["COMPLETED", "CRASHED"]
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert client.get_run(child).info.status == "FAILED"
    assert not partial.parent.exists()
    assert "removed 2 leftovers of killed runs" in out or "removed 1 leftovers of killed runs" in out
    latest = (tmp_path / "out" / "audiences" / "LATEST").read_text()
    assert f"audiences: {(tmp_path / 'out' / 'audiences' / f'run_id={latest}').resolve()}" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in out
    assert f"PREFECT_HOME={tmp_path / 'prefect'} prefect server start" in out


def test_the_partial_night_status_reaches_the_exit_code(monkeypatch, capsys):
    """The final lines need only the result's run, audiences, MLflow run and flow run."""
    import flows.local_server
    import flows.nightly_refresh

    result = SimpleNamespace(
        status="complete", failed={}, skipped={}, run_id="r1", audiences_dir="/a", mlflow_run_id="m", flow_run=None
    )
    monkeypatch.setattr(flows.nightly_refresh, "nightly_refresh", lambda config: result)
    monkeypatch.setattr(flows.local_server, "run_scoped_server", NullServer)
    monkeypatch.setattr(cli, "quiet_user_error_tracebacks", lambda: None)
    code, out, _ = run_cli(["nightly"], capsys)
    assert code == 0 and "lookalike: run r1\n  audiences: /a" in out


@pytest.mark.parametrize("model", ["minhash", "item_ridge", "item_logreg", "svd_centroid", "popularity", "random"])
def test_a_single_seed_campaign_is_scored_by_the_quick_models(synthetic_data, model):
    """Published from all its seeds: a campaign of one seed (nothing held out) gets an audience."""
    import numpy as np

    from lookalike_models.catalog import build_scorer
    from lookalike_models.dataset import CampaignSeeds
    from lookalike_models.pipeline import score_campaign

    solo = CampaignSeeds("solo", synthetic_data.campaigns["c000"].positives[:1])
    train = {**synthetic_data.campaigns, "solo": solo}
    scorer = build_scorer(model)
    scorer.fit(synthetic_data, train)
    scored = score_campaign(scorer, synthetic_data, solo, 50)
    assert scored.users.size == 50 and not np.isin(solo.positives, scored.users).any()


@pytest.mark.slow
def test_a_synthetic_night_after_a_movielens_night_starts_cold(prefect_and_mlflow, tmp_path):
    """The issue's night: MovieLens, then synthetic on the same output root, was an "incremental refresh" from
    MovieLens. Now the second night starts cold and compares no audiences across the two data sets."""
    from tests.conftest import require_shared

    require_shared("movielens-100k")
    from flows.nightly_refresh import nightly_refresh
    from lookalike_models.config import DataSource, EvaluationConfig, NightlyConfig
    from lookalike_models.synthetic import SyntheticConfig
    from tasks.refresh import REFRESH_FILE

    def night(data: DataSource):
        return nightly_refresh(
            NightlyConfig(
                data=data,
                models=[ModelSpec(name="minhash", model="minhash")],
                evaluation=EvaluationConfig(audience_fractions=[0.05]),
                selection=SelectionConfig(registered_model=f"reg-{tmp_path.name}", metric="recall_at_5pct"),
                output_root=str(tmp_path / "out"),
                experiment="data-sets",
            )
        )

    movielens = night(DataSource(kind="movielens"))
    synthetic = night(DataSource(synthetic=SyntheticConfig(n_users=1500, n_items=300, n_campaigns=4, seed=3)))
    assert movielens.status == synthetic.status == "complete"
    assert synthetic.users_embedded["minhash"] == 1500 and not synthetic.campaigns_refreshed  # cold
    assert not any(k.startswith("drift.") for k in synthetic.drift)
    record = json.loads((tmp_path / "out" / "runs" / synthetic.run_id / REFRESH_FILE).read_text())
    assert record["data_set"] == "synthetic"
    # The log says which: a cold start because the previous run read another data set.
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    flow_run_id = UUID(synthetic.flow_run.rsplit("(", 1)[1].rstrip(")"))
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    [line] = [log.message for log in logs if "read another data set" in log.message]
    assert f"previous run {movielens.run_id}" in line and "movielens:" in line and "tonight's synthetic" in line
