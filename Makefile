# cyvoy: `make run` sets up and starts the proxy on its embedded config; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: build run test bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# dependencies and the package itself (editable), re-done when pyproject.toml changes
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q 'setuptools>=77' wheel 'Cython>=3.0'
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

run: build
	$(BIN)/cyvoy --demo

# pytest exits 5 when it collected no test: for us that is a broken suite, not a pass.
test: build
	@$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

-include bench/Makefile.inc
-include fuzz/Makefile.inc

clean:
	rm -rf build $(VENV) proxy/_fastpath/*.c proxy/_fastpath/*.so *.egg-info
