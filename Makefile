# Every target sets itself up from a fresh clone: only Python 3.11 is assumed.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STUDY  ?=

.PHONY: run test test-fast bench lint verify install clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first and pinned: the CPU wheel on disk; an unpinned torch would pull a CUDA build.
$(VENV)/.installed-base: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	@touch $@

# Test/bench extras: pytest, ruff, PostgreSQL driver, MLflow, Ray (cluster tests), HF transformers (benchmark peer).
$(VENV)/.installed-dev: $(VENV)/.installed-base
	$(BIN)/pip install -q -e ".[dev,postgres,mlflow,ray]"
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/pip install -q -e ".[bench]"
	@touch $@

install: $(VENV)/.installed-base

# Two worker processes, one torch thread each: 2-core machines finish sooner (benchmarks/bench_workers.py).
WORKERS ?= 2
run: $(VENV)/.installed-base
	$(BIN)/finscale run $(STUDY) --workers $(WORKERS)

# Two pytest workers (one test file each at a time, so a file's servers and Ray cluster never
# meet another's); tests pin torch to one thread per process (tests/conftest.py), so two
# workers on two cores never oversubscribe. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

test: $(VENV)/.installed-dev
	$(PYTEST)

test-fast: $(VENV)/.installed-dev
	$(PYTEST) -m "not slow"

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m mypy

verify: $(VENV)/.installed-base
	$(BIN)/finscale doctor

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
