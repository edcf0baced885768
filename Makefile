# Spikingformer reproduction harness. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SFH := $(BIN)/sfh

# Pass-throughs to `sfh` (empty means the embedded default).
DATA ?=
STORAGE ?=
TRACKING_URI ?=
RAY_ADDRESS ?=
SFH_FLAGS := $(if $(DATA),--data-root $(DATA)) $(if $(STORAGE),--storage $(STORAGE)) \
             $(if $(TRACKING_URI),--tracking-uri $(TRACKING_URI)) $(if $(RAY_ADDRESS),--address $(RAY_ADDRESS))

.PHONY: install test lint demo bench params

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install test-deps
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check spikingformer harness dashboards tests bench

demo: install
	$(BIN)/python -m spikingformer.train --config experiments/demo_standalone.yaml --out runs/demo

bench: install
	$(BIN)/python bench/run.py

params: install
	$(SFH) params

# Report: runs/reports/<experiment>/index.html for EXP (default: every experiments/*.yaml with runs).
EXP ?=
CHROMIUM := /usr/bin/chromium
.PHONY: report mlflow-ui test-deps

report: install
	$(SFH) report $(EXP) $(if $(TRACKING_URI),--tracking-uri $(TRACKING_URI))

mlflow-ui: install
	$(BIN)/python -m dashboards.mlflow_ui $(if $(TRACKING_URI),--tracking-uri $(TRACKING_URI))

# Headless Chromium (Debian package) for the report's browser test; installed only when missing.
test-deps:
	@test -x $(CHROMIUM) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }
