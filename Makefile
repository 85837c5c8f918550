# Two commands do all the set-up on a fresh machine with python3 >= 3.11 and make:
#   make demo   - create .venv if missing, install pdmp, run the whole method on built-in data
#   make test   - same environment, run the test suite (make test-slow: the slow design checks)
#   make wheel  - build dist/pdmp-<version>-py3-none-any.whl (manifests and reference profiles inside)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pdmp-installed

.PHONY: demo test test-slow bench install wheel clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pdmp demo

# one worker per core (pytest-xdist), each test module in one worker (its module fixtures built once)
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile

test: $(STAMP)
	$(PYTEST)

# the slow checks left out of make test (preset rankings over 5 seeds, real analyses, release checks): about 2 minutes on 2 cores
test-slow: $(STAMP)
	$(PYTEST) -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

wheel: $(STAMP)
	$(BIN)/python -m pip wheel --no-deps --no-build-isolation -w dist .

clean:
	rm -rf $(VENV) runs demo-output bench-results .pytest_cache build dist
