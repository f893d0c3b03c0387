"""The `lookalike` command as an operator meets it: one-line errors with exit status 2, `--debug` for the
traceback, run failures exit 1, partial nights exit 3, and every command the README shows works."""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import yaml

from flows import cli
from lookalike_models.contract import DataContractError
from tasks.results import ExpandResult

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nightly", "--set", "nosuch.key=1"], "unknown setting 'nosuch'"),
        (["nightly", "--set", "publish.audience_fraction=5"], "publish.audience_fraction: Input should be less than"),
        (["nightly", "--set", "publish.audience_fraction"], "expected KEY=VALUE"),
        (["nightly", "--set", "output_root.x=1"], "'output_root.x': 'output_root' is a single value ('runs')"),
        (["nightly", "--set", "publish.model=nosuch"], "publish.model 'nosuch' is neither"),
        (["nightly", "--set", "models=[{name: a, model: minhash}, {name: a, model: random}]"], "unique"),
        (["nightly", "--config", "no/such.yaml"], "config file no/such.yaml not found"),
        (
            ["nightly", "--set", "data.kind=folder", "--set", "data.path=/no/such/folder"],
            "seeds.parquet: file not found",
        ),
        (["expand", "--campaign", "nosuch"], "campaign 'nosuch' is not in the data's seeds; known: c000, c001"),
        (["expand", "--campaign", "c001", "--seeds", "1,2"], "not both"),
        (["expand", "--seeds", " , "], "comma-separated user ids"),
        (["generate", "/tmp/unused", "--set", "n_users=many"], "n_users: Input should be a valid integer"),
        (["recluster", "--seeds", "/no/such/seeds.parquet"], "file not found"),
        # A misspelt key at any depth: refused before anything starts, named by its whole path.
        (["nightly", "--set", "data.synthetic.n_userz=5", "--dry-run"], "unknown setting 'data.synthetic.n_userz'"),
        (
            ["nightly", "--set", "models=[{name: m, model: minhash, params: {treshold: 0.2}}]", "--dry-run"],
            "unknown setting 'models[0].params.treshold'",
        ),
        (
            [
                "nightly",
                "--set",
                "models=[{name: e, model: pinterest_ensemble, params: {extra_members: [{model: item_ridge, "
                "params: {alpah: 1}}]}}]",
                "--dry-run",
            ],
            "unknown setting 'models[0].params.extra_members[0].params.alpah'",
        ),
        (
            [
                "nightly",
                "--set",
                "models=[{name: e, model: pinterest_ensemble, params: {classifier_params: {C: 2, encoder: {dim: 8}}}}]",
                "--dry-run",
            ],
            "models[0].params.classifier_params: ensemble member 'pinterest_classifier' sets its own 'encoder'",
        ),
        (["expand", "--set", "model.params.encoder.dimm=8", "--dry-run"], "unknown setting 'model.params.encoder"),
        (["expand", "--set", "data.shape.max_userz=8", "--dry-run"], "unknown setting 'data.shape.max_userz'"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2(argv, message, capsys):
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert message in err and err.startswith("lookalike: error: ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_bad_config_file_names_the_file_and_the_key(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("publish: {audience_fraction: 2}\n")
    code, _, err = run_cli(["nightly", "--config", str(config)], capsys)
    assert code == 2 and str(config) in err and "publish.audience_fraction" in err
    config.write_text("publish: [unclosed\n")
    code, _, err = run_cli(["nightly", "--config", str(config)], capsys)
    assert code == 2 and "not valid YAML" in err and len(err.strip().splitlines()) == 1


def test_a_config_file_with_a_misspelt_key_deep_inside_names_the_file_and_the_key(tmp_path, capsys):
    config = tmp_path / "nested.yaml"
    config.write_text(
        "models:\n"
        "  - {name: minhash, model: minhash}\n"
        "  - name: ensemble\n"
        "    model: pinterest_ensemble\n"
        "    params: {extra_members: [{model: item_ridge}, {model: svd_centroid, params: {rank: 8}}]}\n"
        "evaluation: {reference: minhash}\n"
    )
    code, _, err = run_cli(["nightly", "--config", str(config), "--dry-run"], capsys)
    assert code == 2 and str(config) in err
    assert "unknown setting 'models[1].params.extra_members[1].params.rank'" in err
    config.write_text("data: {kind: synthetic, synthetic: {n_users: 500, n_itemz: 50}}\n")
    code, _, err = run_cli(["expand", "--config", str(config), "--campaign", "c000", "--dry-run"], capsys)
    assert code == 2 and "unknown setting 'data.synthetic.n_itemz'" in err


def test_recluster_names_a_misspelt_key(tmp_path, capsys):
    seeds = tmp_path / "seeds.parquet"
    pl.DataFrame({"campaign_id": ["c000"], "user_id": [1000004]}).write_parquet(seeds)
    code, _, err = run_cli(["recluster", "--seeds", str(seeds), "--set", "modelz=[ralm]", "--dry-run"], capsys)
    assert code == 2 and err.strip() == "lookalike: error: --set: unknown setting 'modelz'"


def test_debug_shows_the_traceback():
    with pytest.raises(cli.UsageError, match="unknown setting"):
        cli.main(["--debug", "nightly", "--set", "nosuch=1"])


def fake_flow(monkeypatch, module: str, name: str, behaviour):
    """Replace a flow by a plain function: the CLI's error and exit-status path runs without Prefect."""
    import importlib

    monkeypatch.setattr(importlib.import_module(module), name, behaviour)
    monkeypatch.setattr(cli, "quiet_user_error_tracebacks", lambda: None)
    monkeypatch.setattr(importlib.import_module("flows.local_server"), "run_scoped_server", contextlib.nullcontext)
    monkeypatch.setattr("tasks.local_prefect.prepare_local_server", lambda: None)


def test_errors_inside_a_run_exit_2_for_bad_input_and_1_for_failures(monkeypatch, capsys):
    def bad_input(config):
        raise DataContractError("in/seeds.parquet", "user_id", "ids must be integers or strings, got f64", 1.5)

    fake_flow(monkeypatch, "flows.nightly_refresh", "nightly_refresh", bad_input)
    code, _, err = run_cli(["nightly"], capsys)
    assert code == 2 and err.strip() == (
        "lookalike: error: in/seeds.parquet: column 'user_id': ids must be integers or strings, got f64. Example: 1.5"
    )

    def crash(config):
        raise RuntimeError("disk full")

    fake_flow(monkeypatch, "flows.nightly_refresh", "nightly_refresh", crash)
    code, _, err = run_cli(["nightly"], capsys)
    assert code == 1 and "run failed: RuntimeError: disk full" in err and "--debug" in err


@pytest.mark.parametrize(
    ("published", "failed", "skipped", "code"),
    [
        ({"c1": "p"}, {}, {}, 0),
        ({"c1": "p"}, {"minhash/c2": "ValueError: x"}, {}, 3),
        ({"c1": "p"}, {}, {"ghost": "unknown seeds"}, 3),
        ({}, {}, {"ghost": "unknown seeds"}, 1),
    ],
)
def test_a_partial_night_is_not_a_clean_success(published, failed, skipped, code, monkeypatch, capsys):
    from tasks.run_summary import run_status

    def night(config):
        return SimpleNamespace(
            status=run_status(published, failed, skipped),
            failed=failed,
            skipped=skipped,
            run_id="r1",
            audiences_dir="/out/audiences/run_id=r1" if published else None,
            mlflow_run_id="m1",
            flow_run=None,
        )

    fake_flow(monkeypatch, "flows.nightly_refresh", "nightly_refresh", night)
    assert run_cli(["nightly"], capsys)[0] == code


def test_inline_seed_ids_stay_strings_and_reach_the_flow(monkeypatch, capsys):
    seen = {}

    def expand(config):
        seen["config"] = config
        return ExpandResult(run_id="r1", published={config.name: "path"})

    fake_flow(monkeypatch, "flows.expand_audience", "expand_audience", expand)
    code, out, _ = run_cli(["expand", "--seeds", "1000004,1000017,1000023", "--name", "spring_sale"], capsys)
    assert code == 0 and out.strip() == f"spring_sale: {Path('path').resolve()}"  # absolute: where it lies
    config = seen["config"]
    assert config.seed_user_ids == ["1000004", "1000017", "1000023"] and config.campaign_id == ""
    assert config.name == "spring_sale"


def test_console_drops_tracebacks_of_user_errors_only():
    from prefect.logging.handlers import PrefectConsoleHandler

    handler = PrefectConsoleHandler()
    logging.getLogger().addHandler(handler)
    try:
        cli.quiet_user_error_tracebacks()
        cli.quiet_user_error_tracebacks()  # idempotent
        assert len(handler.filters) == 1
        records = []
        for exc in (DataContractError("f", "c", "bad"), RuntimeError("bug")):
            try:
                raise exc
            except Exception:
                record = logging.LogRecord("prefect", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
            handler.filters[0].filter(record)
            records.append(record)
        assert records[0].exc_info is None and records[1].exc_info is not None
    finally:
        logging.getLogger().removeHandler(handler)


# ---- every command of the README ----


def readme_commands() -> list[list[str]]:
    """`lookalike ...` lines of the README's bash blocks and inline code, as argument lists."""
    text = README.read_text()
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    lines += re.findall(r"`((?:\.venv/bin/)?lookalike [^`]+)`", text)
    commands = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words and words[0].endswith("lookalike") and len(words) > 1:
            commands.append(words[1:])
    return commands


def test_the_readme_shows_the_commands_an_operator_needs():
    verbs = {c[0] for c in readme_commands()}
    assert {"nightly", "expand", "generate", "serve", "recluster", "compare"} <= verbs
    assert ["expand", "--seeds", "1000004,1000017,1000023", "--name", "spring_sale"] in readme_commands()


@pytest.mark.parametrize("argv", readme_commands(), ids=" ".join)
def test_every_readme_command_is_valid(argv, tmp_path, monkeypatch, capsys):
    """Each README command parses and its config validates (``--dry-run``: nothing starts)."""
    monkeypatch.chdir(tmp_path)
    if argv[0] in ("serve", "compare"):  # need a server / a tracking store; their options must parse
        cli.build_parser().parse_args(argv)
        return
    if argv[0] == "recluster":
        pl.DataFrame({"campaign_id": ["c000"], "user_id": [1000004]}).write_parquet(tmp_path / argv[2])
    if "--config" in argv:  # relative to the project, as the README runs from there
        if "movielens" in argv[argv.index("--config") + 1]:  # --dry-run checks that the raw data is there
            from tests.conftest import require_shared

            require_shared("movielens-100k")
        i = argv.index("--config") + 1
        argv = argv[:i] + [str(ROOT / argv[i])] + argv[i + 1 :]
    code, out, err = run_cli([*argv, "--dry-run"], capsys)
    assert code == 0, err
    assert "is valid" in out


def test_deployments_never_collide_and_need_no_unset_variables():
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in doc["deployments"]}
    assert not {cli.SERVED_NIGHTLY, cli.SERVED_ADHOC} & set(deployments)  # `serve` overwrites none of them
    assert deployments["nightly"]["concurrency_limit"] == 1 and deployments["adhoc"]["concurrency_limit"] == 1
    parameters = yaml.safe_dump([d.get("parameters") for d in doc["deployments"]])
    assert "LOOKALIKE_SEEDS_PATH" not in parameters  # `deploy --all` needs no variable but the project dir


def small_run_overrides(tmp_path) -> list[str]:
    return [
        "--set",
        "data.synthetic.n_users=1200",
        "--set",
        "data.synthetic.n_items=300",
        "--set",
        "data.synthetic.n_campaigns=5",
        "--set",
        "data.synthetic.max_seeds=120",
        "--set",
        f"output_root={tmp_path / 'out'}",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        c
        for c in readme_commands()
        if c[0] in ("nightly", "expand", "generate") and not any("dask_address" in w for w in c)
    ],
    ids=" ".join,
)
def test_readme_commands_run_on_small_data(argv, prefect_and_mlflow, tmp_path, capsys):
    """The README's runnable commands, as written, with small data and quick models appended."""
    if argv[0] == "generate":
        code, out, _ = run_cli([argv[0], str(tmp_path / "gen"), *argv[2:], "--set", "n_users=500"], capsys)
        assert code == 0 and (tmp_path / "gen" / "seeds.parquet").exists()
        return
    if "--config" in argv:
        if "movielens" in argv[argv.index("--config") + 1]:
            from tests.conftest import require_shared

            require_shared("movielens-100k")
        i = argv.index("--config") + 1
        argv = argv[:i] + [str(ROOT / argv[i])] + argv[i + 1 :]
    extra = small_run_overrides(tmp_path)
    if argv[0] == "nightly":
        extra += [
            "--set",
            "models=[{name: minhash, model: minhash}, {name: popularity, model: popularity}]",
            "--set",
            "evaluation.reference=popularity",
            "--set",
            "evaluation.split_seeds=[0]",
            "--set",
            f"selection.registered_model=reg-{tmp_path.name}",
            "--set",
            "execution.n_workers=2",
            "--set",
            "execution.shards=2",
        ]
    code, out, err = run_cli([*argv, *extra], capsys)
    assert code == 0, err
    if argv[0] == "expand":
        published = Path(out.strip().split(": ", 1)[1])
        assert pl.read_parquet(published).height == round(0.05 * 1200)
