# Every target sets itself up from a fresh clone: only Python 3.11 is assumed.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STUDY  ?=

.PHONY: run test test-fast bench lint verify install clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first and pinned: the CPU wheel on disk; an unpinned torch would pull a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,postgres,mlflow]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/finscale run $(STUDY)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

verify: $(STAMP)
	$(BIN)/finscale doctor

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
