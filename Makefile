# Plasticity — the README's commands.
#   make run    install, migrate, seed the demo, start the web server and one worker
#   make test   install, lint, check, and run every test
#   make bench  run the benchmarks in bench/ (ONLY=name for one)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU build on this machine's disk; a looser spec
	# would pull a multi-gigabyte CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py seed_demo
	$(PY) manage.py ensure_operator
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The distributed suite runs against the real PostgreSQL and Redis (mandatory with CI=true;
# skipped with a message elsewhere when they are absent).
PG_URL ?= postgres://root@127.0.0.1:5432/test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/14

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest -m "not distributed" --ignore=tests/distributed $(PYTEST_ARGS)
	DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_TEST_URL) $(PY) -m pytest -m distributed tests/distributed $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(if $(ONLY),--only $(ONLY),)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
