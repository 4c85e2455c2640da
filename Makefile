# edgeminer: the two commands a new user runs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeminer-installed
DATA_DIR ?= ./edgeminer-data
DEMO_DIR ?= ./demo-data
PORT ?= 8000
# CI sets CI=true: the slow tests run too, and a missing browser is a failure.
PYTEST_MARK := $(if $(filter true 1 yes,$(CI)),,-m "not slow")

.PHONY: install browser demo test test-all lint bench serve clean

install: $(STAMP)

# torch/torchvision are pinned here only to pick the releases this machine keeps on disk
# (pip finds them through its find-links); pyproject.toml keeps the open ranges.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<26.2"
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || \
	  $(BIN)/python -m pip install --quiet "torch<=2.14.1" "torchvision<=0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# Debian's Chromium for the dashboard's browser tests (never `playwright install`).
browser:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium missing: run 'sudo apt-get install -y chromium' (browser tests will $(if $(CI),fail,skip))"; fi

demo: install
	$(BIN)/edgeminer --data-dir $(DATA_DIR) demo --demo-dir $(DEMO_DIR) --retrain --port $(PORT)

test: install browser
	$(BIN)/python -m pytest $(PYTEST_MARK)

test-all: install browser
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check edgeminer indexer service tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/analyze.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/dashboard.py

serve: install
	$(BIN)/edgeminer --data-dir $(DATA_DIR) serve --port $(PORT)

clean:
	rm -rf $(DATA_DIR) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
