# Everything a newcomer needs, from a machine with Python 3.11, make and the package registries.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast test-stack lint bench localaws airflow docker-engine stack stack-down clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $(STAMP)

## The main job on localaws: the digits experiment's DAG in train then tune mode, the diabetes one in train
## mode; `make run EXPERIMENT=<name>` runs that experiment's DAG (MODES=train,tune for both).
run: install
	$(PY) scripts/run_pipeline.py $(if $(EXPERIMENT),--experiment $(EXPERIMENT)) $(if $(MODES),--modes $(MODES))

## Every test, every layer (pytest.ini's markers), including the docker runner's (installs and starts a
## Docker engine when root); on TEST_WORKERS pytest-xdist workers, a test module to each (TEST_WORKERS=0, one
## process). Three on two cores: with two, the cores idled while both workers' tests waited on jobs and Airflow.
TEST_WORKERS ?= 3
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
test: install
	$(PY) -m pytest tests $(XDIST)

## The production stack for real (tests/deploy, marker stack; builds what `make stack` builds, 5-10 minutes on
## a clean machine, then ~11 minutes of runs): not part of `make test`.
test-stack: install
	$(PY) -m pytest tests/deploy -m stack -p no:xdist

## The quick layer: no Docker engine, no end-to-end run of the real network or a DAG, nothing slow.
test-fast: install
	$(PY) -m pytest tests -m "not docker and not e2e and not slow and not stack" $(XDIST)

## ruff (lint, then format) and mypy, as pyproject.toml sets them; CI runs it before the tests.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/run.py $(BENCH_ARGS)

## localaws in the foreground on 127.0.0.1:4566.
localaws: install
	$(PY) -m localaws serve

## Airflow standalone, UI on http://127.0.0.1:8080, against localaws (started unless one listens on 4566).
airflow: install
	$(PY) scripts/airflow_standalone.py

## docker-compose.yaml's stack (CeleryExecutor, Postgres, Redis, MLflow, localaws) from images built here;
## prints the UI's address and login once every service is healthy. stack-down keeps the volumes.
stack: install
	$(PY) scripts/stack.py up

stack-down: install
	$(PY) scripts/stack.py down

docker-engine:
	bash scripts/docker-engine.sh install
	bash scripts/docker-engine.sh start
	bash scripts/docker-engine.sh base-image

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
