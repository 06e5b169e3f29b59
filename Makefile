# One command each: `make up` runs Batcomputer locally, `make test` runs every test (`make test-fast`: unit tests only).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
CLIENTS_STAMP := .venv-clients/.installed

.PHONY: install test-tools web-fonts prerequisites up test test-fast lint bench clean lock

install: $(STAMP)

# Tools used by the tests only: Node's (Azurite, newman) and the Open Inference Protocol's Python clients, in a
# venv of their own (kserve pins pandas below 3).
test-tools: $(NODE_STAMP) $(CLIENTS_STAMP)

$(CLIENTS_STAMP): tests/clients/requirements.lock
	$(PYTHON) -m venv .venv-clients
	.venv-clients/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.lock
	touch $(CLIENTS_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Tools the tests need beyond Python: says in one line each what is missing and how to install it.
prerequisites:
	@bash .ci/prerequisites

# The web client's font comes from its npm package; without npm the page uses the system's monospace font.
web-fonts:
	@if [ ! -d node_modules/@fontsource/share-tech-mono ]; then \
	  if command -v npm >/dev/null; then npm ci --omit=dev --no-audit --no-fund --loglevel=error; \
	  else echo "npm not found: the web client will use the system's monospace font"; fi; fi

up: install web-fonts
	$(BIN)/batcomputer up

# Unit tests: no Redis, no child process, no network (tests/unit/conftest.py refuses them).
test-fast: install
	$(BIN)/python -m pytest -q tests/unit

# Everything: unit tests first (they fail fast), then the integration tests spread over worker processes
# (pytest-xdist; each test file stays in one process, as its module-scoped stacks expect). The 15 slowest are listed.
TEST_PROCESSES ?= 4
test: prerequisites install test-tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q tests/unit
	$(BIN)/python -m pytest -q tests/integration -n $(TEST_PROCESSES) --dist loadfile --durations=15

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/explain.py
	$(BIN)/python bench/capture.py

clean:
	rm -rf $(VENV) .venv-clients .mypy_cache .ruff_cache .pytest_cache

lock:
	(echo "# Pinned versions, known to install together (pip freeze of a working venv). Regenerate: make lock"; \
	 $(BIN)/pip freeze --exclude-editable) > requirements.lock
