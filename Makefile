# Two entry points: `make demo` and `make test`. Both create or refresh .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bex-installed
PYTEST_ARGS ?=

# Headless MuJoCo, and keep every listener of the embedded Ray on loopback
# (bex stops Ray from rewriting 127.0.0.1 to the network address: README, "Ray on loopback").
export MUJOCO_GL ?= disable
export BEX_NODE_IP ?= 127.0.0.1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast lint bench clean chromium

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: the pinned CPU build is on disk here; an unpinned torch pulls CUDA wheels.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,minari]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/bex demo

# The linter (ruff, settings in pyproject.toml) on the whole tree, then the whole
# suite, Ray end-to-end tests included (select them with -m ray).
test: install lint chromium
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS) tests

# The report test opens the page in a real headless browser: Debian's chromium, installed when missing.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; }

test-fast: install lint
	$(BIN)/python -m pytest -q -m "not ray and not slow" tests

lint: install
	$(BIN)/ruff check .

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) bex_runs .pytest_cache
