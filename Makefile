# Spikingformer reproduction harness. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SFH := $(BIN)/sfh

# Pass-throughs to `sfh` (empty means the embedded default): DATA=<folder with one subfolder per dataset>,
# STORAGE=<Tune/Train storage folder or URI>, TRACKING_URI=<MLflow URI>, RAY_ADDRESS=<head host:port>,
# ROWS=<row,row>, SEEDS=<n>.
DATA ?=
STORAGE ?=
TRACKING_URI ?=
RAY_ADDRESS ?=
ROWS ?=
SEEDS ?=
CLUSTER_FLAGS := $(if $(STORAGE),--storage $(STORAGE)) $(if $(RAY_ADDRESS),--address $(RAY_ADDRESS))
TRACKING_FLAGS := $(if $(TRACKING_URI),--tracking-uri $(TRACKING_URI))
SFH_FLAGS := $(CLUSTER_FLAGS) $(TRACKING_FLAGS) $(if $(DATA),--data-root $(DATA)) \
             $(if $(ROWS),--rows $(ROWS)) $(if $(SEEDS),--seeds $(SEEDS))
TABLES := imagenet cifar10 cifar100 cifar10-dvs dvs128-gesture \
          sdt-imagenet sdt-cifar10 sdt-cifar100 sdt-cifar10-dvs sdt-dvs128-gesture \
          spikformer-imagenet spikformer-cifar10 spikformer-cifar100
TABLES += qkformer-imagenet qkformer-cifar10 qkformer-cifar100 qkformer-cifar10-dvs qkformer-dvs128-gesture

.PHONY: install test test-fast lint demo bench params gpu-check help clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Tests run in TEST_WORKERS processes (pytest-xdist; each has its own Ray head, and the tests that start the
# private local Ray share one process): Ray's start-ups and waits overlap the other worker's computing.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadgroup

# The whole suite (what CI runs), timed, with its 15 slowest tests.
test: install test-deps
	@start=$$(date +%s); $(PYTEST) tests; code=$$?; \
	  echo "make test: $$(( $$(date +%s) - start )) s"; exit $$code

# The edit loop: everything but what needs Ray, trains for long, compiles or drives a browser (markers in
# pyproject.toml).
test-fast: install
	@start=$$(date +%s); $(PYTEST) -m "not ray and not train and not compile and not browser and not slurm" tests; \
	  code=$$?; echo "make test-fast: $$(( $$(date +%s) - start )) s"; exit $$code

lint: install
	$(BIN)/ruff check spikingformer harness dashboards tests bench

# The embedded default: both demo rows through Ray Tune + Ray Train + MLflow on this CPU, then the table.
demo: install
	$(SFH) reproduce experiments/demo.yaml $(SFH_FLAGS)
	@$(SFH) table experiments/demo.yaml $(TRACKING_FLAGS) --out runs/reports/demo.md > /dev/null
	@echo "table: runs/reports/demo.md; figures: make report; browse runs: make mlflow-ui"

# A grid on this CPU (experiments/grid/digits.yaml: T x width of the demo's model, 6 points), its table by
# axes and its report with top-1 and energy against each axis. GRID_CONCURRENT trials at once: a started
# trial holds its Train controller and workers (~2 GB) even while it waits for a CPU.
GRID_CONCURRENT ?= 2
.PHONY: demo-grid
demo-grid: install
	$(SFH) reproduce experiments/grid/digits.yaml $(SFH_FLAGS) --max-concurrent $(GRID_CONCURRENT)
	@$(SFH) table experiments/grid/digits.yaml $(TRACKING_FLAGS) --out runs/reports/demo-grid.md > /dev/null
	@$(SFH) report experiments/grid/digits.yaml $(TRACKING_FLAGS) --name demo-grid > /dev/null
	@echo "table: runs/reports/demo-grid.md; report: runs/reports/demo-grid/index.html"

# One paper table (x seeds) each; reproduce-all runs them one after the other.
.PHONY: reproduce-all $(addprefix reproduce-,$(TABLES)) resume table
reproduce-all: $(addprefix reproduce-,$(TABLES))

$(addprefix reproduce-,$(TABLES)): reproduce-%: install
	$(SFH) reproduce experiments/$*.yaml $(SFH_FLAGS)

# Continue an interrupted reproduction: make resume NAME=cifar10 (the folder under STORAGE, default runs/ray).
resume: install
	$(if $(NAME),,$(error NAME=<experiment> is required, e.g. make resume NAME=cifar10))
	$(SFH) resume $(NAME) $(CLUSTER_FLAGS)

# Paper vs reproduced, from MLflow: make table [EXP=experiments/cifar10.yaml]
table: install
	$(SFH) table $(EXP) $(TRACKING_FLAGS)

bench: install
	$(BIN)/python bench/run.py

# One GPU, no dataset, under 8 minutes: what the CPU suite cannot run (README: GPU acceptance). Exits 2 without a GPU.
gpu-check: install
	$(BIN)/python bench/gpu_check.py

params: install
	$(SFH) params

# Report: runs/reports/<experiment>/index.html for EXP (default: every experiments/*.yaml with runs).
EXP ?=
CHROMIUM := /usr/bin/chromium
.PHONY: report mlflow-ui test-deps

report: install
	$(SFH) report $(EXP) $(if $(TRACKING_URI),--tracking-uri $(TRACKING_URI))

# The MLflow UI on 127.0.0.1:PORT (default 5000), printing each experiment's results link; JOBS=1 also starts
# MLflow's job runner (GenAI jobs), off by default.
PORT ?=
JOBS ?=
mlflow-ui: install
	$(BIN)/python -m dashboards.mlflow_ui --port $(or $(PORT),5000) $(if $(TRACKING_URI),--tracking-uri $(TRACKING_URI)) \
	  $(if $(JOBS),--jobs)

# Headless Chromium (Debian package) for the report's browser test; installed only when missing.
test-deps:
	@test -x $(CHROMIUM) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# Search: Optuna TPE + ASHA around one row, e.g. make search SEARCH=experiments/search/cifar10.yaml TRIALS=8 DATA=/data.
# Every run adds trials to the same study (runs/optuna.db); the best row is written to runs/search/<name>-best.yaml.
SEARCH ?= experiments/search/demo.yaml
TRIALS ?=
.PHONY: search

search: install
	$(SFH) search $(SEARCH) $(CLUSTER_FLAGS) $(TRACKING_FLAGS) $(if $(DATA),--data-root $(DATA)) \
	  $(if $(TRIALS),--trials $(TRIALS))

# The accuracy-energy trade-off on this CPU in minutes (experiments/search/pareto.yaml: T x depth x width on digits,
# top-1 against energy under the common ruler): the Pareto front printed, written as runs/search/demo-pareto-front.yaml
# (one row per point, for sfh reproduce) and drawn with every trial in runs/reports/demo-pareto/index.html.
PARETO ?= experiments/search/pareto.yaml
.PHONY: search-pareto optuna-dashboard

search-pareto: install
	$(SFH) search $(PARETO) $(CLUSTER_FLAGS) $(TRACKING_FLAGS) $(if $(DATA),--data-root $(DATA)) \
	  $(if $(TRIALS),--trials $(TRIALS))
	$(SFH) report --search $(PARETO) $(TRACKING_FLAGS)

# The searches' Optuna studies (runs/optuna.db, or STUDY_STORAGE=<Optuna URL>) in optuna-dashboard on 127.0.0.1:PORT
# (default 8080).
STUDY_STORAGE ?=
optuna-dashboard: install
	$(BIN)/python -m dashboards.optuna_ui --port $(or $(PORT),8080) $(if $(STUDY_STORAGE),--study-storage $(STUDY_STORAGE))

# What a table costs, measured here before it trains: make plan EXP=experiments/imagenet.yaml [STEPS=2] [WATTS=300]
# (each row's step timed on this device, projected to wall-clock, device-hours and kWh; logged to MLflow).
STEPS ?=
WATTS ?=
.PHONY: plan

plan: install
	$(if $(EXP),,$(error EXP=<experiment file> is required, e.g. make plan EXP=experiments/imagenet.yaml))
	$(SFH) plan $(EXP) $(CLUSTER_FLAGS) $(TRACKING_FLAGS) $(if $(DATA),--data-root $(DATA)) $(if $(ROWS),--rows $(ROWS)) \
	  $(if $(SEEDS),--seeds $(SEEDS)) $(if $(STEPS),--steps $(STEPS)) $(if $(WATTS),--watts $(WATTS))

# What each target does (the manual: docs/commands.md).
help:
	@echo "make demo              both demo rows on this CPU (digits), then the table (runs/reports/demo.md)"
	@echo "make report [EXP=...]  the HTML report of every experiment with runs (runs/reports/<name>/index.html)"
	@echo "make mlflow-ui [PORT=5000] [JOBS=1]   the MLflow UI on 127.0.0.1, with each experiment's results link"
	@echo "make table [EXP=...]   paper vs reproduced, from MLflow"
	@echo "make plan EXP=...      what a table costs, measured here before it trains [STEPS= WATTS=]"
	@echo "make reproduce-<table> one paper table, e.g. make reproduce-cifar10 DATA=/data [STORAGE= TRACKING_URI=]"
	@echo "make resume NAME=...   continue an interrupted reproduction"
	@echo "make demo-grid | search | search-pareto | optuna-dashboard [PORT=8080]   grids and searches on digits"
	@echo "make test | test-fast | lint | bench | gpu-check | params   checks and measurements"
	@echo "make clean             remove what a build or a test leaves (caches, egg-info, generated reports)"
	@echo "                       keeps .venv and runs/ (your MLflow store and Tune state); see docs/commands.md"

# Everything regenerable, and nothing a user made: caches, build metadata, the generated reports.
clean:
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache build *.egg-info runs/reports
