# Steward: `make run` starts the demo, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

# `make run` settings; override on the command line or in the environment (make run PORT=8080).
HOST ?= 127.0.0.1
PORT ?= 8000
RUN_DIR := $(or $(STEWARD_VAR_DIR),var)
# Worker pool. SQLite (the default) lets one process write at a time, so a second worker process
# or thread only waits on the database lock: measured here, 100 demo runs took 16 s with one solo
# worker and 43 s with --concurrency 2 (prefork or threads), with no "database is locked" error
# either way. The solo pool also stops within honcho's 5 s on Ctrl-C and finishes its step first,
# where prefork children are killed by the SIGTERM honcho sends to the process group.
# PostgreSQL takes concurrent writers, so there a prefork pool of 2 runs steps in parallel.
ifdef DATABASE_URL
WORKER_ARGS ?= --concurrency 2
else
WORKER_ARGS ?= --pool solo
endif

.PHONY: run test fuzz lint format bench bench-api bench-web install clean migrate

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

# Migrate, seed the demo (idempotent), then run web, worker, control and beat (the Procfile).
run: migrate
	$(PY) manage.py seed_demo
	@mkdir -p $(RUN_DIR)
	@echo
	@echo "Steward is starting on http://$(HOST):$(PORT)/  (admin: http://$(HOST):$(PORT)/admin/)"
	@echo "Log in with a demo login above (admin / admin-demo). Ctrl-C stops web, worker, control and beat."
	@echo
	@HOST=$(HOST) WORKER_ARGS="$(WORKER_ARGS)" BEAT_SCHEDULE=$(RUN_DIR)/celerybeat-schedule \
		exec $(PY) -m honcho start --procfile Procfile --port $(PORT)

# The suite runs in TEST_WORKERS processes (pytest-xdist), each with its own test database and
# Redis database. Most of a test's time is waiting on the processes it starts (workers, servers,
# Chromium), so more processes than cores pay: tests/audit, tests/integration and the live
# browser test took 10 min 49 s with 2 and 8 min 16 s with 4 on 2 cores (docs/benchmarks.md).
# TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 4
test: $(STAMP)
	STEWARD_FIND_SERVICES=1 $(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The schemathesis run of every API operation that `make test` bounds to 5 examples each, with many
# more (FUZZ_EXAMPLES=1000 make fuzz for longer).
FUZZ_EXAMPLES ?= 200
fuzz: $(STAMP)
	STEWARD_FIND_SERVICES=1 STEWARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_api_schema_fuzz.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	STEWARD_FIND_SERVICES=0 $(PY) manage.py makemigrations --check --dry-run

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Every benchmark script in bench/: each bench/*.py except its helpers, which are the files named
# _*.py (__init__.py too), *_peer.py (peer systems) and *_worker.py (worker apps). Each benchmark
# picks its own database and Redis (see its docstring). `make bench BENCHMARKS=bench/engine.py`
# runs one.
BENCH_HELPERS := $(wildcard bench/_*.py bench/*_peer.py bench/*_worker.py)
BENCHMARKS ?= $(filter-out $(BENCH_HELPERS),$(sort $(wildcard bench/*.py)))
bench: $(BENCH_STAMP)
	@test -n "$(BENCHMARKS)" || { echo "no benchmarks in bench/"; exit 1; }
	@set -e; for script in $(BENCHMARKS); do echo "== $$script"; $(PY) $$script; done

# The REST API benchmark alone (issue #12): BENCH_API_ARGS="--runs 20000 --seconds 3" for a smoke run.
bench-api: $(BENCH_STAMP)
	$(PY) bench/api.py $(BENCH_API_ARGS)

# The web pages benchmark alone (issues #13-#15): inbox, live updates, resume after approval, runs
# list and run page, audit report and entry proof, KPI page. A smoke run:
# BENCH_WEB_ARGS="--runs 20000 --approvals 2000 --audit-entries 100000 --seconds 3".
bench-web: $(BENCH_STAMP)
	$(PY) bench/web.py $(BENCH_WEB_ARGS)

clean:
	rm -rf var
