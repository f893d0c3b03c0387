"""The operator's day in the real UIs, checked: a Prefect server and the MLflow UI on 127.0.0.1 (free ports),
the deployments of prefect.yaml run by a real worker (process work pool), screenshots of the pages an operator
reads, taken by headless Chromium, and their text checked in the page's DOM.

    make ui-check                                   # or: python bench/ui_check.py [--out DIR] [--users 2000]

One night on tiny synthetic data from the command line (``lookalike nightly``, results under the project's
.prefect like any CLI run), then the same night from the ``nightly`` deployment through the worker (a run the
UI would start): it must reuse the command line's cached results. Then it screenshots the deployment's
custom-run form, the deployment run's artifacts, the MLflow runs table (its shared view), the parent run and
the registered model, and checks each page's text: the form in the order users change it with no
'Property is type "None"', rounded numbers in the artifacts, metric columns and the champion's metrics in
MLflow. Screenshots (PNG), page texts and server logs go to ``--out`` (default ``runs/ui-check/<time>``).

Installs nothing: it needs Debian's ``chromium`` (``apt-get install -y chromium``). Exit status 0 when every
check passes, 1 when one fails (listed), 2 when Chromium is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENT = "lookalike-ui-check"
INSTALL_HINT = "chromium is not installed: apt-get install -y chromium (Debian/Ubuntu), then rerun make ui-check"


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status < 500:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{what} did not answer at {url} within {seconds:.0f} s")


class Processes:
    """Servers and the worker this script starts, each in its own process group, stopped (by id) at the end."""

    def __init__(self, logs: Path):
        self.logs, self.running = logs, []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict, cwd: Path = ROOT) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 (closed when the process is stopped)
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append((name, proc, log))
        return proc

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        for _, proc, log in reversed(self.running):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()


def run(argv: list[str], env: dict, log: Path, timeout: float = 900, cwd: Path = ROOT) -> str:
    """A command to completion; its output is kept in ``log`` and returned; a failure raises with its tail."""
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {done.returncode}:\n{tail}")
    return done.stdout + done.stderr


def browse(chromium: str, url: str, out: Path, name: str, size: tuple[int, int] = (1600, 1200)) -> str:
    """Screenshot ``url`` to ``<name>.png`` and return the text of its DOM (also kept as ``<name>.html``)."""
    profile = out / "chromium-profile" / name
    common = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        "--virtual-time-budget=25000",
    ]
    subprocess.run([*common, f"--screenshot={out / f'{name}.png'}", url], capture_output=True, timeout=180)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    (out / f"{name}.html").write_text(dom)
    return dom


def page_text(dom: str) -> str:
    """Visible-ish text of a DOM dump: tags and scripts dropped, whitespace collapsed."""
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def api(base: str, path: str, body: dict | None = None) -> object:
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def night_config(users: int, output_root: Path) -> dict:
    """The tiny night both runs make (partial: the rest comes from conf/nightly.yaml)."""
    return {
        "models": [
            {"name": "minhash", "model": "minhash"},
            {"name": "item_logreg", "model": "item_logreg"},
            {"name": "popularity", "model": "popularity"},
        ],
        "publish": {"audience_fraction": 0.05},
        "data": {"kind": "synthetic", "synthetic": {"n_users": users, "n_items": 400, "n_campaigns": 4, "seed": 7}},
        "evaluation": {"reference": "item_logreg", "split_seeds": [0]},
        "output_root": str(output_root),
        "experiment": EXPERIMENT,
    }


def as_overrides(doc: dict, prefix: str = "") -> list[str]:
    """``--set key=value`` pairs for a nested config (lists as JSON, which is YAML)."""
    pairs = []
    for key, value in doc.items():
        if isinstance(value, dict):
            pairs += as_overrides(value, f"{prefix}{key}.")
        else:
            pairs += ["--set", f"{prefix}{key}={json.dumps(value)}"]
    return pairs


class Checks:
    def __init__(self):
        self.failed: list[str] = []

    def __call__(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failed.append(what)


def check_form(text: str, check: Checks) -> None:
    check('Property is type "None"' not in text, "custom-run form: no field reads 'Property is type \"None\"'")
    order = [text.find(label) for label in ("Audience Fraction", "Models", "Data", "N Users")]
    check(
        -1 not in order and order == sorted(order),
        f"custom-run form: audience fraction, models, data, synthetic knobs in that order {order}",
    )
    check("item_ridge" in text, "custom-run form: model names offered as choices")


def check_artifacts(text: str, check: Checks) -> None:
    long_floats = re.findall(r"\d\.\d{7,}", text)
    check("audience-metrics" in text or "Held-out metrics" in text, "artifacts page: the held-out metrics table")
    check(not long_floats, f"artifacts page: numbers rounded (found {long_floats[:3]})")


def check_mlflow(text: str, metric: str, check: Checks) -> None:
    check(f"champion.{metric}" in text, f"MLflow runs table: column champion.{metric}")
    check("fit_seconds" in text, "MLflow runs table: child-run metric columns (fit_seconds)")
    check("vs_item_logreg" not in text, "MLflow runs table: short metric names (no vs_<reference> prefix)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for screenshots, logs and the runs (default runs/ui-check/<time>)")
    parser.add_argument("--users", type=int, default=2000, help="synthetic users (default 2000)")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print(f"ui-check: {INSTALL_HINT}", file=sys.stderr)
        return 2
    out = Path(args.out or ROOT / "runs" / "ui-check" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}").resolve()
    shots, logs = out / "screenshots", out / "logs"
    shots.mkdir(parents=True, exist_ok=True)
    prefect_port, mlflow_port = free_port(), free_port()
    prefect_url, mlflow_url = f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{mlflow_port}"
    tracking = f"sqlite:///{out / 'mlflow.db'}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    base |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    # The port as a setting, not only a flag: the UI asks the server where its API is (else :4200).
    server_env = base | {
        "PREFECT_HOME": str(out / "prefect-server"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(prefect_port),
    }
    # Clients of the server: the operator's shell (its own ~/.prefect), the worker, the command line.
    client = base | {
        "PREFECT_API_URL": f"{prefect_url}/api",
        "PREFECT_HOME": str(out / "operator-home"),
        "MLFLOW_TRACKING_URI": tracking,
        "LOOKALIKE_MLFLOW_UI": mlflow_url,
        "LOOKALIKE_PROJECT_DIR": str(ROOT),
    }
    cli_env = {k: v for k, v in client.items() if k != "PREFECT_HOME"}  # `lookalike` keeps <project>/.prefect
    config = night_config(args.users, out / "runs")
    check = Checks()
    print(f"ui-check: Prefect {prefect_url}, MLflow {mlflow_url}, output {out}")
    sys.path.insert(0, str(ROOT))
    os.environ["MLFLOW_TRACKING_URI"] = tracking
    os.environ["LOOKALIKE_MLFLOW_UI"] = mlflow_url
    from tasks import tracking as mlflow_tracking

    # The store and the experiment first (before the MLflow UI opens the store), with the check's own artifact
    # folder (a tracking URI alone would put artifacts in the project's mlruns/) and without the
    # experiment-kind tag: the run must set it, as on an experiment made before this version.
    mlflow_tracking.client().create_experiment(EXPERIMENT, artifact_location=(out / "mlruns").as_uri())
    with Processes(logs) as procs:
        procs.start(
            "prefect-server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            server_env,
        )
        procs.start(
            "mlflow-ui",
            [
                str(BIN / "mlflow"),
                "ui",
                "--backend-store-uri",
                tracking,
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            base,
        )
        wait_http(f"{prefect_url}/api/health", 180, "Prefect server")
        prefect = [str(BIN / "prefect"), "--no-prompt"]
        run([*prefect, "work-pool", "create", "lookalike-local", "--type", "process"], client, logs / "work-pool.log")
        run([*prefect, "deploy", "--all"], client, logs / "deploy.log")
        procs.start("worker", [*prefect, "worker", "start", "--pool", "lookalike-local"], client)

        print("ui-check: night 1 from the command line")
        started = time.monotonic()
        run([str(BIN / "python"), "-m", "flows.cli", "nightly", *as_overrides(config)], cli_env, logs / "night-cli.log")
        print(f"  {time.monotonic() - started:.0f} s")
        print("ui-check: night 2 from the nightly deployment, through the worker")
        [deployment] = api(
            f"{prefect_url}/api", "/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}}
        )
        flow_run = api(
            f"{prefect_url}/api", f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"config": config}}
        )
        started, state = time.monotonic(), None
        while time.monotonic() - started < 900:
            state = api(f"{prefect_url}/api", f"/flow_runs/{flow_run['id']}")["state"]
            if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(3)
        print(f"  {state and state['name']} in {time.monotonic() - started:.0f} s")
        check(bool(state) and state["type"] == "COMPLETED", "the deployment's run completed through the worker")
        tasks = api(f"{prefect_url}/api", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
        cached = sorted({t["name"].rsplit("-", 1)[0] for t in tasks if t["state"] and t["state"]["name"] == "Cached"})
        check(
            "train_model" in cached and "prepare_data" in cached,
            f"the UI run reused the command line's cache ({cached})",
        )

        print("ui-check: screenshots")
        form = browse(
            chromium,
            f"{prefect_url}/v2/deployments/deployment/{deployment['id']}/run",
            shots,
            "prefect-custom-run-form",
            (1400, 7000),
        )
        check_form(page_text(form), check)
        artifacts = browse(
            chromium,
            f"{prefect_url}/v2/runs/flow-run/{flow_run['id']}?tab=Artifacts",
            shots,
            "prefect-flow-run-artifacts",
            (1600, 1400),
        )
        check_artifacts(page_text(artifacts), check)
        [table] = api(
            f"{prefect_url}/api",
            "/artifacts/filter",
            {"artifacts": {"key": {"any_": ["audience-metrics"]}, "flow_run_id": {"any_": [flow_run["id"]]}}},
        )
        metrics = browse(chromium, f"{prefect_url}/v2/artifacts/artifact/{table['id']}", shots, "prefect-metrics-table")
        long_floats = re.findall(r"\d\.\d{7,}", page_text(metrics))
        check(
            "recall_at_5pct" in page_text(metrics) and not long_floats,
            f"metrics table artifact: rounded {long_floats[:3]}",
        )
        listed = page_text(browse(chromium, f"{prefect_url}/v2/deployments", shots, "prefect-deployments"))
        check("recluster" in listed and "Every 15 minutes" not in listed, "deployments: no schedule that does not run")

        wait_http(mlflow_url, 120, "MLflow UI")
        table = browse(chromium, mlflow_tracking.runs_table_url(EXPERIMENT), shots, "mlflow-runs-table", (1800, 1000))
        check_mlflow(page_text(table), "recall_at_5pct", check)
        parent = mlflow_tracking.client().search_runs(
            [mlflow_tracking.experiment_id(EXPERIMENT)], "tags.`lookalike.status` != ''", max_results=1
        )
        if parent:
            run_page = browse(
                chromium, mlflow_tracking.run_url(parent[0].info.run_id, EXPERIMENT), shots, "mlflow-parent-run"
            )
            check("champion.gauc" in page_text(run_page), "MLflow parent run: the champion's metrics")
            registered = parent[0].data.tags.get("lookalike.champion_version", "").rsplit(" v", 1)[0]
            if registered:
                browse(
                    chromium,
                    f"{mlflow_url}/#/models/{registered}?workflowType=machine_learning",
                    shots,
                    "mlflow-registered-model",
                )
        children = mlflow_tracking.client().search_runs(
            [mlflow_tracking.experiment_id(EXPERIMENT)],
            "tags.model = 'minhash'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        if children:  # night 1's fit of minhash: its run spans the fit and holds the model's files
            child = children[0]
            page = page_text(
                browse(chromium, mlflow_tracking.run_url(child.info.run_id, EXPERIMENT), shots, "mlflow-child-run")
            )
            seconds = (child.info.end_time - child.info.start_time) / 1000
            check(
                abs(seconds - child.data.metrics["fit_seconds"]) < 0.01 and "recall_at_5pct.vs_ref" in page,
                f"MLflow child run: duration {seconds:.2f} s = fit_seconds, metrics against the reference",
            )
        kind = mlflow_tracking.client().get_experiment_by_name(EXPERIMENT).tags.get("mlflow.experimentKind")
        check(kind == "custom_model_development", f"MLflow experiment set up for model training ({kind})")
    print(f"ui-check: screenshots in {shots}")
    if check.failed:
        print(f"ui-check: {len(check.failed)} checks failed", file=sys.stderr)
        return 1
    print("ui-check: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
