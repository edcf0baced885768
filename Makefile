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

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check spikingformer harness dashboards tests bench

demo: install
	$(BIN)/python -m spikingformer.train --config experiments/demo.yaml

bench: install
	$(BIN)/python bench/run.py

params: install
	$(SFH) params
