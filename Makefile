# The README's two commands are `make demo` and `make test`; both bootstrap what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/dev.lock | sha256sum | cut -c1-12)
# Locks: exact versions with hashes (pip-compile --generate-hashes). runtime.lock is what a
# release venv needs; dev.lock adds the dev and bench extras at the same versions.
LOCK_VENV := .venv-lock
LOCK_FLAGS := --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links --quiet -c requirements/pins.txt

.PHONY: demo demo-hash test test-full lint fmt lock lock-upgrade bench serve system-deps system-deps-demo venv clean

# The .venv needs python3 and its venv module first (order-only: they do not make it stale).
$(STAMP): pyproject.toml requirements/dev.lock | system-deps-demo
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*; touch $@

# Only the .venv (what demo, test and lint build first); the fresh-machine check times it alone.
venv: $(STAMP)

# Re-resolve the locks after pyproject.toml changed, keeping every pin that still fits;
# `make lock-upgrade` moves everything to the newest versions (within requirements/pins.txt).
lock: $(LOCK_VENV)/bin/pip-compile
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) -o requirements/runtime.lock pyproject.toml
	$(LOCK_VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) --extra dev --extra bench --extra fleet \
		-o requirements/dev.lock pyproject.toml requirements/dev.in

lock-upgrade:
	$(MAKE) lock LOCK_ARGS=--upgrade

$(LOCK_VENV)/bin/pip-compile:
	@test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q pip-tools==7.6.2

# Debian packages, installed only when missing (scripts/dev/system-deps.sh has the one table):
# system-deps-demo what the demo needs (python3, python3-venv), system-deps what the tests need too.
system-deps:
	@PYTHON=$(PYTHON) bash scripts/dev/system-deps.sh test

system-deps-demo:
	@PYTHON=$(PYTHON) bash scripts/dev/system-deps.sh demo

# The guarded rollout that catches a bad release (about three minutes); demo-hash: hashing and
# matching a generated image set through a real dhash serve.
demo: system-deps-demo $(STAMP)
	$(BIN)/python -m dhash_rollout.demo

demo-hash: system-deps-demo $(STAMP)
	$(BIN)/python -m dhash_rollout.demo.hashing

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# make test samples the heaviest matrices (tests/support/matrix_sampling.py: a new seed per run,
# printed; DHASH_TEST_SAMPLE=<seed> repeats one); make test-full runs every case.
# Two pytest-xdist workers (TEST_WORKERS), a module per worker in file order (--dist loadfile:
# a module's shared site and its ordered scenario stay on one worker); the tests marked serial
# (latency ratios) then run alone. Each invocation fails on its own, exit 5 included.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = $(BIN)/pytest -p no:cacheprovider --durations=40 -n $(TEST_WORKERS) --dist loadfile -m "not serial"
PYTEST_SERIAL = $(BIN)/pytest -p no:cacheprovider --durations=10 -m serial

test: system-deps $(STAMP) lint
	DHASH_TEST_SAMPLE=$${DHASH_TEST_SAMPLE:-auto} $(PYTEST_PARALLEL)
	DHASH_TEST_SAMPLE=$${DHASH_TEST_SAMPLE:-auto} $(PYTEST_SERIAL)

test-full: system-deps $(STAMP) lint
	DHASH_TEST_SAMPLE=all $(PYTEST_PARALLEL)
	DHASH_TEST_SAMPLE=all $(PYTEST_SERIAL)

serve: $(STAMP)
	$(BIN)/dhash serve

bench: bench-hash bench-search bench-service bench-backup

.PHONY: bench-hash
bench-hash: $(STAMP)
	$(BIN)/python bench/bench_hash.py

.PHONY: bench-search
bench-search: $(STAMP)
	$(BIN)/python bench/bench_search.py

.PHONY: bench-service
bench-service: $(STAMP)
	$(BIN)/python bench/bench_service.py

.PHONY: bench-bounded
bench-bounded: $(STAMP)
	$(BIN)/python bench/bench_bounded.py

.PHONY: bench-resize
bench-resize: $(STAMP)
	nice -n 10 $(BIN)/python bench/bench_resize.py

.PHONY: bench-hash-budget
bench-hash-budget: $(STAMP)
	nice -n 10 $(BIN)/python bench/bench_hash_budget.py

.PHONY: bench-memory
bench-memory: $(STAMP)
	nice -n 10 $(BIN)/python bench/bench_memory.py

.PHONY: bench-review
bench-review: $(STAMP) system-deps
	$(BIN)/python bench/bench_review.py

.PHONY: bench-backup
bench-backup: $(STAMP) system-deps
	$(BIN)/python bench/bench_backup.py

.PHONY: bench-monitor
bench-monitor: $(STAMP) system-deps
	$(BIN)/python bench/bench_monitor.py

.PHONY: bench-canary
bench-canary: $(STAMP)
	nice -n 10 $(BIN)/python bench/bench_canary.py
	nice -n 10 $(BIN)/python bench/bench_canary_real.py 3 4 2.0

.PHONY: bench-monitor-recovery
bench-monitor-recovery: $(STAMP)
	$(BIN)/python bench/bench_monitor.py --recovery

# The fleet gate's proxyErrorRate through HAProxy's exporter beside Debian's Prometheus.
.PHONY: bench-proxy-metrics
bench-proxy-metrics: $(STAMP) system-deps
	nice -n 10 $(BIN)/python bench/bench_proxy_metrics.py

# Needs root (network namespaces); 1, 3 and 6 namespace hosts behind a real HAProxy.
.PHONY: bench-fleet
bench-fleet: $(STAMP) system-deps
	nice -n 10 $(BIN)/python bench/bench_fleet.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
