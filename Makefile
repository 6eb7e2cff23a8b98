# Local development and CI entry points. Python 3.11+ (Lambda runs 3.12, arm64).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SAM_VENV ?= .venv-sam
# The SAM CLI used by make sam-validate / sam-build and by .github/workflows/deploy.yml (keep both equal:
# tests/unit/test_build_pins.py checks it).
SAM_CLI_VERSION := 1.170.0
export PYTHONPATH := functions/upload
EVENT ?= events/01-shape-a-two-transactions.json

.PHONY: help install prereqs demo invoke serve test lint typecheck unit integration conformance test-next actionlint test-client openapi sam-validate sam-build clean bench bench-memory bench-drain bench-load chaos

help:
	@echo "make demo | invoke EVENT=events/x.json | serve | test | unit | integration | conformance | test-next | lint | typecheck | actionlint | bench | bench-memory | bench-drain | bench-load | chaos SEED= DURATION= | sam-validate | sam-build"

$(VENV)/.installed: requirements-dev.txt layers/deps/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

demo: install  ## every event in events/ through the real handler into the embedded SQLite demo database
	$(PY) -m powersync_upload.local demo

invoke: install  ## one event: make invoke EVENT=events/03-not-null-violation.json
	$(PY) -m powersync_upload.local invoke $(EVENT)

serve: install  ## local HTTP server on 127.0.0.1:$${PORT:-3000}
	$(PY) -m powersync_upload.local serve

lint: install  ## ruff (complexity 10 per function included), format, and the module boundaries (who may import whom)
	$(PY) -m ruff check functions tests bench layers
	$(PY) -m ruff format --check functions tests bench layers
	$(PY) -m pytest -q -p no:cacheprovider tests/unit/test_boundaries.py

typecheck: install
	$(PY) -m mypy

# The GitHub Actions workflows (actionlint runs shellcheck on their run: scripts) and the compose init script.
actionlint: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" actionlint .github/workflows/*.yml
	$(VENV)/bin/shellcheck docker/mssql/init.sh tools/prereqs

# Node.js 20+ and a Chromium, installed here when root on Debian (apt-get), else one line saying what to install.
prereqs:
	@tools/prereqs

test: prereqs lint typecheck  ## the README's test command: lint, types, unit, integration, the shared cases and the client connector
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-client

unit: install  ## unit and property tests: no database server (SQLite files at most)
	$(PY) -m pytest -q tests/unit tests/property

integration: install  ## the handler against real databases, fault injection, limits, security
	$(PY) -m pytest -q tests/integration tests/security

conformance: install  ## the shared cases (../shared/cases) on every dialect here, both modes
	$(PY) -m pytest -q tests/conformance

NEXT_CASES ?= $(abspath $(CURDIR)/../shared/cases/next)

test-next: install  ## the cases of open issues (../shared/cases/next), exactly as `make conformance` runs the shared ones
	SHARED_CASES="$(NEXT_CASES)" $(PY) -m pytest -q tests/conformance

CLIENT_DIR := clients/typescript

$(CLIENT_DIR)/node_modules/.installed: $(CLIENT_DIR)/package.json $(CLIENT_DIR)/package-lock.json
	cd $(CLIENT_DIR) && npm ci
	touch $@

test-client: prereqs install $(CLIENT_DIR)/node_modules/.installed  ## the TypeScript connector: unit, real SDK (Node) against `serve`, npm pack + install, headless Chromium (Node 20+)
	cd $(CLIENT_DIR) && PYTHON="$(abspath $(PY))" npm test

$(SAM_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet "aws-sam-cli==$(SAM_CLI_VERSION)"
	touch $@

# The template as it is (SnapStart off, the default), then with the SnapStart parameter's default set to "true".
sam-validate: $(SAM_VENV)/.installed
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint
	mkdir -p .local && sed '/^  SnapStart:$$/,/Default:/ s/Default: "false"/Default: "true"/' template.yaml > .local/template-snapstart.yaml
	grep -q 'Default: "true"' .local/template-snapstart.yaml
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam validate --lint -t .local/template-snapstart.yaml

sam-build: $(SAM_VENV)/.installed
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(SAM_VENV)/bin/sam build

SEED ?= 1
DURATION ?= 600
DEVICES ?= 20
WORKERS ?= 4
DIALECT ?=

chaos: install  ## a long fault campaign per dialect (tests/chaos): make chaos SEED=7 DURATION=600 [DEVICES= WORKERS= DIALECT=]
	$(PY) -m tests.chaos.campaign --seed $(SEED) --duration $(DURATION) --devices $(DEVICES) --workers $(WORKERS) \
		$(if $(DIALECT),--dialect $(DIALECT))

clean:
	rm -rf .aws-sam .local .pytest_cache .mypy_cache .ruff_cache $(CLIENT_DIR)/dist $(CLIENT_DIR)/build $(CLIENT_DIR)/artifacts

openapi: install  ## regenerate openapi.json from the handler's models (a test fails when it is stale)
	$(PY) -m powersync_upload.openapi

# The import time and the memory at the body cap are measured with the Lambda runtime's Python (3.12)
# and the layer's requirements; without a python3.12 here they fall back to $(PY) (said in the output).
# pyenv's versions first: its python3.12 shim exists on PATH but fails when 3.12 is not the active version.
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
BENCH_VENV := .local/venv312

$(BENCH_VENV)/.installed: layers/deps/requirements.txt
	$(if $(PYTHON312),$(PYTHON312) -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install --quiet -r $< && touch $@,@echo "no python3.12: the import time is measured with $(PY)")

bench: install $(BENCH_VENV)/.installed  ## planned vs per-operation, loopback and +1 ms per round trip, then the connector's queue drain; prints figures (never asserts). BENCH_ARGS=--quick
	$(PY) bench/bench.py $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-drain

bench-memory: install $(BENCH_VENV)/.installed  ## peak RSS at the body cap (PostgreSQL) and the import time of app
	$(PY) bench/memory.py

bench-load: install  ## N = 1, 2, 4, 8 serve workers under 50 devices (one transaction per request vs 50), PostgreSQL and MariaDB: requests/s, transactions/s, p50/p99, and docs/bench-load.png. LOAD_ARGS=--seconds 3
	$(PY) bench/load.py $(LOAD_ARGS)

bench-drain: install $(CLIENT_DIR)/node_modules/.installed  ## 500 offline transactions drained through a 100 ms round-trip proxy: this connector vs one transaction per request
	cd $(CLIENT_DIR) && PYTHON="$(abspath $(PY))" npm run --silent bench:drain
