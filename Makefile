# apilake: the targets a newcomer guesses. Every target sets up what it needs from nothing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
# Python 3.12, as the Lambda runtime: pyenv's 3.12.1 if there is one, else python3.12 from PATH.
PY312 ?= $(shell for p in "$$(PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null)" "$$(command -v python3.12)"; do \
  [ -n "$$p" ] && "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { echo "$$p"; break; }; done)
TOOLS := .tools
UV := $(TOOLS)/bin/uv
CHECKOV_VERSION := 3.3.30
# Lambda's python3.12 runtime has boto3: the layer does not ship it, nor what only it needs.
RUNTIME_PROVIDES := $(foreach p,boto3 botocore s3transfer python-dateutil six,--no-emit-package $(p))
# checkov pins an old boto3 that breaks aws-sam-cli: it gets an environment of its own.
CHECKOV := .checkov
# cfn-lint at its latest release, beside the older one aws-sam-cli pins (sam validate --lint uses that one).
CFN_LINT_VERSION := 1.58.0
CFN_LINT := .cfn-lint
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Nothing may wait on the network or on a real AWS account.
export SAM_CLI_TELEMETRY := 0
export AWS_MAX_ATTEMPTS := 1
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_EC2_METADATA_DISABLED := true
export UV_PYTHON_DOWNLOADS := never

.PHONY: help demo soak bench bench-peers env checkov-env cfn-lint-env chromium test unit integration lint build template lock clean

help:
	@echo "make demo   the scheduled flow (planner -> queues -> workers -> lake) on this machine, then SQL over the lake (sets up .venv)"
	@echo "make test   lint, unit, integration, end-to-end and template tests (sets up .venv from nothing)"
	@echo "make soak   >= 2,000 pages under every fault kind; verdict: lost / duplicated / forked (exit 1 if any)"
	@echo "make bench  benchmarks: throughput, rate limits, cold start, fan-out, memory, cost (~15 min); table + bench/results/*.json"
	@echo "make bench-peers  apilake against dlt and a naive loop, one fake API (~25 min; .bench-peers env; PEERS_ARGS=--help)"
	@echo "make lint   ruff and mypy"
	@echo "make build  sam build (Lambda functions and the common layer, python3.12 arm64)"
	@echo "make template  regenerate the sources' region of template.yaml from layers/common/sources.yaml (prints what changed)"
	@echo "make lock   re-resolve requirements-dev.lock and layers/common/requirements.txt"

$(UV):
	@test -n "$(PY312)" || { echo "python3.12 not found (PATH or pyenv 3.12.1)"; exit 1; }
	$(PY312) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(STAMP): $(UV) requirements-dev.lock pyproject.toml
	$(UV) venv --quiet --seed --allow-existing --python $(PY312) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --quiet --compile-bytecode requirements-dev.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps -e .
	touch $@

env: $(STAMP)

$(CHECKOV)/.installed: $(UV)
	$(UV) venv --quiet --allow-existing --python $(PY312) $(CHECKOV)
	VIRTUAL_ENV=$(CHECKOV) $(UV) pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

checkov-env: $(CHECKOV)/.installed

$(CFN_LINT)/.installed: $(UV)
	$(UV) venv --quiet --allow-existing --python $(PY312) $(CFN_LINT)
	VIRTUAL_ENV=$(CFN_LINT) $(UV) pip install --quiet cfn-lint==$(CFN_LINT_VERSION)
	touch $@

cfn-lint-env: $(CFN_LINT)/.installed

# The run report's screenshot test opens the report in headless Chromium (Debian's package). Where it
# cannot be installed (no apt-get, not root) this says so and the test skips with that reason.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium: could not be installed (needs apt-get and root): the report screenshot test will skip"

demo: env
	$(BIN)/apilake demo

soak: env
	$(BIN)/apilake soak

bench: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m bench.run

# The peer benchmark's own environment (dlt and its pins), apart from the dev lock.
PEERS := .bench-peers
$(PEERS)/.installed: $(UV) bench/peers/requirements.txt
	$(UV) venv --quiet --allow-existing --python $(PY312) $(PEERS)
	VIRTUAL_ENV=$(PEERS) $(UV) pip sync --quiet bench/peers/requirements.txt
	touch $@

bench-peers: env $(PEERS)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m bench.peers.run $(PEERS_ARGS)

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: env
	$(BIN)/pytest tests/unit

integration: env
	$(BIN)/pytest tests/integration

test: lint checkov-env cfn-lint-env chromium
	$(BIN)/pytest -n 2

build: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/sam build --template template.yaml

template: env
	$(BIN)/python -m apilake_dev.template.generate

lock: $(UV)
	$(UV) pip compile --quiet pyproject.toml --extra dev --python-version 3.12 -o requirements-dev.lock
	$(UV) pip compile --quiet pyproject.toml -c requirements-dev.lock --python-version 3.12 \
	  --python-platform aarch64-manylinux_2_28 --no-header --no-annotate $(RUNTIME_PROVIDES) -o layers/common/requirements.txt

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache $(VENV) $(TOOLS) $(CHECKOV) $(CFN_LINT) $(PEERS)
