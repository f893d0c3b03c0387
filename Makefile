# Two commands for a fresh machine: `make run` (set up + nightly flow on the default data), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Local, server-less defaults: Prefect's ephemeral server keeps its SQLite DB under the project.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: install run test test-fast lint format bench mlflow-ui prefect-server ui-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/lookalike nightly

# CI's command: lint and formatting checks (seconds), then every test.
test: install
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --no-cache --check .
	$(PY) -m pytest -q -n 2 --dist loadfile

# Development lane: everything but the tests marked slow (flows end to end, real-data learning checks).
test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

lint: install
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --no-cache --check .

format: install
	$(VENV)/bin/ruff format .

bench: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) bench/minhash_throughput.py

mlflow-ui: install
	@echo "runs table: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (or follow a run's summary link)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

prefect-server: install
	$(VENV)/bin/prefect server start --host 127.0.0.1

# The real UIs, checked: Prefect server + MLflow UI on free local ports, a deployment run through a worker on
# tiny data, headless-Chromium screenshots and text checks (needs `apt-get install -y chromium`).
ui-check: install
	$(PY) bench/ui_check.py

clean:
	rm -rf runs .prefect mlflow.db mlruns
