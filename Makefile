# The two set-up commands of the README: `make demo` and `make test`; `make dist` for volunteers.
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: demo test install native lint dist clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

native:
	$(MAKE) --no-print-directory -C native

demo: install native
	$(BIN)/python examples/demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install native lint
	$(BIN)/pytest

# What a volunteer needs, in dist/: XWCH's wheel and install-worker.sh, which installs the
# wheel beside it (XWCH is on no package index).
dist: install
	rm -rf dist
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .
	cp install-worker.sh dist/

clean:
	$(MAKE) -C native clean
	rm -rf $(VENV) .xwch-demo mandelbrot-results dist
