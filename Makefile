# runstate: the two commands a newcomer needs are `make demo` and `make test`.
# Everything they need is installed from here (venv, Debian packages, the kube-apiserver build,
# cached under ~/.cache/runstate), so both work on a fresh machine.

PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
CACHE     ?= $(HOME)/.cache/runstate
DEV_DIR   ?= $(CACHE)/cluster
HOSTS_DIR ?= $(CACHE)/hosts
IMAGE     ?= ghcr.io/runstate/runstate:0.1.0
PYTEST_ARGS ?=

export RUNSTATE_CACHE := $(CACHE)

.PHONY: help deps system-deps cluster operator demo down test lint typecheck crds bench bench-fanout bench-fanout-ssh bench-fanout-pyinfra bench-store bench-decide bench-compare \
        helm chart-lint image image-local kind-up kind-load kind-install

help:
	@echo "make demo   set up everything (cluster, operator, 3 SSH test hosts), run the examples, show them work"
	@echo "make test   lint, type-check and run every test (unit, stores, cluster, integration)"
	@echo "make image-local  build the operator image with buildah (no Docker) and unpack it for the process kubelet"
	@echo "make down   stop the demo's operator, control plane and Redis, and the SSH test hosts"
	@echo "make bench  throughput benchmark (results: docs/performance.md)"
	@echo "make bench-fanout  fan-out benchmark, one run of 500 hosts × 2 operations (results: docs/performance.md)"
	@echo "make bench-fanout-ssh  fan-out over SSH: 50 SSH test hosts × 2 operations, ssh connector vs plain ssh host true (results: docs/performance.md)"
	@echo "make bench-fanout-pyinfra  pyinfra over SSH: 50 SSH test hosts × files.line, runstate vs the pyinfra CLI (results: docs/performance.md)"
	@echo "make bench-store  state-store transitions/s: RedisStateStore vs redis-benchmark and PyStator (results: docs/performance.md)"
	@echo "make bench-compare BASELINE=<rev>  throughput and fan-out, a baseline revision's operator vs this tree's, in one run"
	@echo "make bench-decide  one engine decision of a 10,000-host run, inline vs in a thread (results: docs/performance.md)"

# ---- setup -------------------------------------------------------------------------------

# One venv for development, all editable: the operator (with its test tools), the state-store
# library (stores/, distribution runstate-stores) and the dev tools (devtools/, runstate-dev:
# control plane, process kubelet; not part of the operator's wheel or image).
$(VENV)/.installed: pyproject.toml stores/pyproject.toml devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ./stores -e ./devtools -e '.[test]'
	touch $@

deps: $(VENV)/.installed

# Debian packages (etcd-server, redis-server, openssh-server for the SSH test hosts, tmux for the
# kubectl plugin's watch test, the Go
# toolchain for the first build) and the
# kube-apiserver / kube-controller-manager v1.20.2 build (about 8 minutes the first time).
system-deps: deps
	$(BIN)/python -m runstate_dev build

# ---- the demo ----------------------------------------------------------------------------

cluster: system-deps
	$(BIN)/python -m runstate_dev up --dir $(DEV_DIR) --redis

# The operator runs in the background (log: $(DEV_DIR)/operator.log) until `make down`. The
# CRDs are applied (and served) first: kopf may miss a CRD created while it starts.
operator: cluster
	@if [ -f $(DEV_DIR)/operator.pid ] && kill -0 $$(cat $(DEV_DIR)/operator.pid) 2>/dev/null; then \
	  echo "operator already running (pid $$(cat $(DEV_DIR)/operator.pid))"; \
	else \
	  KUBECONFIG=$(DEV_DIR)/kubeconfig $(BIN)/python tools/demo.py --crds-only || exit 1; \
	  . $(DEV_DIR)/env && KUBECONFIG=$(DEV_DIR)/kubeconfig RUNSTATE_METRICS_PORT=$${RUNSTATE_METRICS_PORT:-8080} \
	    nohup $(BIN)/python -m runstate operator --standalone > $(DEV_DIR)/operator.log 2>&1 & \
	  echo $$! > $(DEV_DIR)/operator.pid; \
	  echo "operator started (pid $$!), log $(DEV_DIR)/operator.log, metrics on :$${RUNSTATE_METRICS_PORT:-8080}/metrics"; \
	fi

# Three SSH test hosts for the ssh example (`hosts up` again is a no-op, or restarts the
# stopped ones); tools/demo.py reads their addresses from $(HOSTS_DIR)/hosts.json.
demo: operator
	$(BIN)/python -m runstate_dev hosts up --count 3 --dir $(HOSTS_DIR)
	KUBECONFIG=$(DEV_DIR)/kubeconfig $(BIN)/python tools/demo.py --hosts-dir $(HOSTS_DIR)
	@echo "The cluster is still up: export KUBECONFIG=$(DEV_DIR)/kubeconfig"

down:
	-@if [ -f $(DEV_DIR)/operator.pid ]; then kill $$(cat $(DEV_DIR)/operator.pid) 2>/dev/null; rm -f $(DEV_DIR)/operator.pid; fi
	-@[ -x $(BIN)/python ] && $(BIN)/python -m runstate_dev down --dir $(DEV_DIR)
	-@[ -x $(BIN)/python ] && $(BIN)/python -m runstate_dev hosts down --dir $(HOSTS_DIR)

# ---- checks ------------------------------------------------------------------------------

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

# mypy --strict (pyproject.toml [tool.mypy]) over the three packages, then over the tests. The
# tests are a run of their own (mypy takes packages or files, not both) from the repository root,
# which is on mypy's search path as it is on pytest's (`pythonpath = ["."]`): `tests.*` resolves.
# The benchmarks are a run of their own too: bench/ is their sys.path[0] (`harness`,
# `fanout_rows`, `store_rows` are top-level there), as when `python bench/fanout.py` runs.
typecheck: deps
	$(BIN)/mypy -p runstate -p runstate_stores -p runstate_dev
	$(BIN)/mypy tests stores/tests
	$(BIN)/mypy bench

crds: deps
	$(BIN)/runstate crds

# Every test. With CI=true, a control plane or Redis that cannot start fails the run.
test: system-deps lint typecheck
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: system-deps
	$(BIN)/python bench/throughput.py

bench-fanout: system-deps
	$(BIN)/python bench/fanout.py

# Its own SSH test hosts, control plane and Redis in a temporary dir (never $(DEV_DIR) or
# $(HOSTS_DIR)); the work pods run `runstate exec` from a runner root refreshed from this tree
# (default: this checkout's under /opt/runstate-dev; RUNNER_ROOT=<dir> to choose one).
RUNNER_ROOT ?=
bench-fanout-ssh: system-deps
	$(BIN)/python bench/fanout.py --connector ssh $(if $(RUNNER_ROOT),--runner-root $(RUNNER_ROOT))

# The same, one pyinfra operation (files.line) against the pyinfra CLI on the same hosts.
bench-fanout-pyinfra: system-deps
	$(BIN)/python bench/fanout.py --connector ssh --pyinfra $(if $(RUNNER_ROOT),--runner-root $(RUNNER_ROOT))

# PyStator 0.0.47 gets a venv of its own under $(CACHE)/bench-pystator (made by the script).
bench-store: system-deps
	$(BIN)/python bench/store.py

# Before and after in one run: throughput and fan-out with a baseline revision's operator and
# this tree's (BASELINE=<git rev>, default: the previous commit).
BASELINE ?= HEAD~1
bench-compare: system-deps
	$(BIN)/python bench/compare.py $(BASELINE)

bench-decide: deps
	$(BIN)/python bench/decide.py

# ---- packaging (for machines with Docker and kind) ---------------------------------------

helm:
	$(PYTHON) tools/helm.py

chart-lint: deps
	$$($(PYTHON) tools/helm.py) lint --strict charts/runstate

# The chart's default image (charts/runstate: image.repository and appVersion; tests/image checks
# that IMAGE agrees), with Docker on its default base python:3.11-slim.
image:
	docker build -t $(IMAGE) .

# The same Dockerfile without a Docker engine (what CI and the dev cluster use): buildah on a
# local Debian base, then unpacked into the process kubelet's image store
# ($(CACHE)/images/store). Built again only when the image's inputs changed.
image-local: deps
	$(BIN)/python -m runstate_dev image build

kind-up:
	kind create cluster --config kind-config.yaml

kind-load:
	kind load docker-image $(IMAGE) --name runstate

kind-install:
	$$($(PYTHON) tools/helm.py) upgrade --install runstate charts/runstate -n runstate-system --create-namespace
