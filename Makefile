# ipymini: `make run` opens the kernel in jupyter console; `make test` runs the whole suite.
# Another interpreter: `make test PYTHON=/path/to/python3.14` gets a venv of its own (.venv3.14, .venv3.13t)
PYTHON ?= python3
ifeq ($(origin PYTHON),file)
VENV ?= .venv
else
VENV ?= .venv$(shell $(PYTHON) -c 'import sys, sysconfig; print("%d.%d" % sys.version_info[:2] + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))')
endif
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# pip extra with the test dependencies; test-gui leaves out the browser and gateway tests' (jupyterlab,
# playwright, Kernel Gateway), test-core PySide6 too: they do not install on free-threaded 3.13
TEST_EXTRA ?= test
# wheels over a newer sdist: a fresh machine has no Rust or C toolchain for what lacks a wheel (3.13t)
PIP_INSTALL := -m pip install -q --prefer-binary

.PHONY: run test test-core test-e2e bench soak install clean

# an interpreter without ensurepip (Debian's, unless python3-venv is installed) gets pip from its own pip
$(BIN)/python:
	$(PYTHON) -c 'import ensurepip' 2>/dev/null && $(PYTHON) -m venv $(VENV) \
	  || { $(PYTHON) -m venv --without-pip $(VENV) && $(PYTHON) -m pip -q --python $(BIN)/python install pip; }
	$(BIN)/python $(PIP_INSTALL) --upgrade pip

install: $(BIN)/python
	$(BIN)/python $(PIP_INSTALL) -e .

run: install
	$(BIN)/python $(PIP_INSTALL) jupyter_console
	$(BIN)/python -m ipymini install --sys-prefix
	$(BIN)/jupyter console --kernel ipymini

$(VENV)/.deps-$(TEST_EXTRA): pyproject.toml | $(BIN)/python
	$(BIN)/python $(PIP_INSTALL) -e '.[$(TEST_EXTRA)]'
	touch $@

test: $(VENV)/.deps-$(TEST_EXTRA)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# real clients end to end: nbclient/nbconvert, jupyter console (pexpect), JupyterLab (headless Chromium)
test-e2e: $(VENV)/.deps-$(TEST_EXTRA)
	$(BIN)/python -m pytest -m "nbclient or console or browser" $(PYTEST_ARGS)

bench: $(VENV)/.deps-$(TEST_EXTRA)
	$(BIN)/python bench/run.py

# issue 16: 100,000 requests from 4 chaos clients at once (interrupts, stdin, subshell churn, floods);
# then the memory of 20,000 display cells against ipykernel (bench/memory.py)
soak: $(VENV)/.deps-$(TEST_EXTRA)
	$(BIN)/python pytests/chaos.py --requests 100000 --clients 4
	$(BIN)/python bench/memory.py --cells 20000

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
