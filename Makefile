# Every target bootstraps the project virtualenv first, so a fresh machine needs
# only Python 3.11 and make. See README.md.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANIFEST := dbt_project/target/manifest.json

export RECLOOP_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(RECLOOP_DATA_DIR)/dagster_home
# local or scale (recloop/settings.py): which deploy/<profile>/dagster.yaml a new
# DAGSTER_HOME gets.
export RECLOOP_PROFILE ?= local
export HF_HUB_OFFLINE := 1
export BENTOML_HOME ?= $(RECLOOP_DATA_DIR)/bentoml
export BENTOML_DO_NOT_TRACK := True
# `make serve` listens here; see services/README.md. SERVE_HOST=0.0.0.0 opens it to the
# network: set RECLOOP_API_KEY first, or /admin/* is open to anyone who can reach it.
SERVE_PORT ?= 3000
SERVE_HOST ?= 127.0.0.1
# `make dev`: the Dagster UI, on its own port beside the service's.
export DAGSTER_PORT ?= 3001
DAGSTER_YAML := $(DAGSTER_HOME)/dagster.yaml
# The project's tools (dbt, dagster, feast) first, whether or not the venv is activated.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo pipeline loop experiments test test-unit test-integration test-e2e dev serve bento bench bench-quality bench-scale bench-served bench-serve lint clean

install: $(STAMP) $(MANIFEST)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# dagster-dbt builds the asset graph from the manifest; `dbt parse` writes it.
$(MANIFEST): $(STAMP) $(shell find dbt_project -name '*.sql' -o -name '*.py' -o -name '*.yml' -o -name '*.csv' | grep -v target/)
	mkdir -p $(RECLOOP_DATA_DIR)
	cd dbt_project && ../$(BIN)/dbt parse --quiet --profiles-dir .

# The instance's settings of the profile (local: embedded storage; scale: PostgreSQL),
# unless DAGSTER_HOME has its own.
$(DAGSTER_YAML):
	mkdir -p $(DAGSTER_HOME)
	cp -n deploy/$(RECLOOP_PROFILE)/dagster.yaml $@

# TENANTS=2 splits MovieLens' users into two tenants, each trained and served on its own.
TENANTS ?= 1
demo: install $(DAGSTER_YAML)
	$(BIN)/python -m drivers.demo --tenants $(TENANTS)

# The whole chain on the raw log already in $(RECLOOP_DATA_DIR) (yours; no download).
pipeline: install $(DAGSTER_YAML)
	$(BIN)/recloop run

# The closed loop (drivers/loop.py): simulated users, drift, sensors, retraining, hot swap.
loop: install
	$(BIN)/python -m drivers.loop

# Two online tests from YAML specs with simulated users (drivers/experiment_demo.py).
experiments: install
	$(BIN)/python -m drivers.experiment_demo

# Every tier (what CI runs); the tiers one by one below. tests/conftest.py marks by folder.
test: install
	$(BIN)/python -m pytest

# Pure and fast: spread over both cores, under a minute.
test-unit: install
	$(BIN)/python -m pytest -n 2 tests/unit

test-integration: install
	$(BIN)/python -m pytest tests/integration

test-e2e: install
	$(BIN)/python -m pytest tests/e2e

dev: install $(DAGSTER_YAML)
	$(BIN)/dagster dev -w workspace.yaml --host 127.0.0.1 --port $(DAGSTER_PORT)

serve: install
	$(BIN)/bentoml serve services.service:RecloopService --host $(SERVE_HOST) --port $(SERVE_PORT)

# The Bento the Kubernetes manifests name (deploy/k8s/kustomization.yaml): recloop:<version
# in pyproject.toml>; `bentoml containerize recloop:<version>` makes its image.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
bento: install
	$(BIN)/bentoml build --version $(VERSION)

bench: install
	$(BIN)/python -m bench.pipeline

bench-quality: install
	$(BIN)/python -m bench.quality

# Synthetic logs of 100k, 1M and 10M events to a promoted model, cold and one new day
# (bench/scale.py; needs Redis; the 10M size takes long). Outside CI.
bench-scale: install
	$(BIN)/python -m bench.scale

# What the served HTTP API recommends on held-out splits, against the baselines (bench/served.py).
bench-served: install
	$(BIN)/python -m bench.served

bench-serve: install
	$(BIN)/python -m bench.serve

lint: install
	$(BIN)/ruff check recloop assets feature_repo services drivers tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) dbt_project/target dbt_project/logs
