# The README's two commands are `make demo` and `make test`; both bootstrap what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: demo test lint fmt bench bench-hash bench-search bench-service bench-bounded bench-monitor bench-backup serve system-deps clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@rm -f $(VENV)/.installed-*; touch $@

system-deps:
	@bash scripts/dev/system-deps.sh

demo: $(STAMP) system-deps
	$(BIN)/python -m dhash_rollout.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: $(STAMP) system-deps lint
	$(BIN)/pytest -p no:cacheprovider

serve: $(STAMP)
	$(BIN)/dhash serve

bench: bench-hash bench-search bench-service bench-backup

bench-hash: $(STAMP)
	$(BIN)/python bench/bench_hash.py

bench-search: $(STAMP)
	$(BIN)/python bench/bench_search.py

bench-service: $(STAMP)
	$(BIN)/python bench/bench_service.py

bench-bounded: $(STAMP)
	$(BIN)/python bench/bench_bounded.py

bench-backup: $(STAMP) system-deps
	$(BIN)/python bench/bench_backup.py

bench-monitor: $(STAMP) system-deps
	$(BIN)/python bench/bench_monitor.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
