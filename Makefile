# ipymini: `make run` opens the kernel in jupyter console; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test test-core test-e2e bench soak install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

run: install
	$(BIN)/python -m pip install -q jupyter_console
	$(BIN)/python -m ipymini install --sys-prefix
	$(BIN)/jupyter console --kernel ipymini

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

test: $(VENV)/.test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# real clients end to end: nbclient/nbconvert, jupyter console (pexpect), JupyterLab (headless Chromium)
test-e2e: $(VENV)/.test-deps
	$(BIN)/python -m pytest -m "nbclient or console or browser" $(PYTEST_ARGS)

bench: $(VENV)/.test-deps
	$(BIN)/python bench/run.py

# issue 16: 100,000 requests from 4 chaos clients at once (interrupts, stdin, subshell churn, floods);
# then the memory of 20,000 display cells against ipykernel (bench/memory.py)
soak: $(VENV)/.test-deps
	$(BIN)/python pytests/chaos.py --requests 100000 --clients 4
	$(BIN)/python bench/memory.py --cells 20000

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
