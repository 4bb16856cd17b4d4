# make run   — set everything up on a fresh machine and start the demo (web + qcluster);
#              installs requirements.txt only
# make test  — the whole test suite (SQLite + ORM broker; DATABASE_URL/REDIS_URL switch it)
# make lint  — ruff and mypy (both install requirements-dev.txt)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test lint bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# One stamp per requirements file: a venv that `make run` set up (runtime only) must not
# satisfy `make test`, which needs the development tools as well.
$(VENV)/.installed-run: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

# requirements-dev.txt includes requirements.txt: installing it brings the runtime up to date
# too, so the run stamp is renewed with it.
$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(VENV)/.installed-run $@

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/python -m project.run --host $(HOST) --port $(PORT)

# pytest exits 5 when a selection collects no test: say so instead of failing obscurely.
test: install-dev
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy webhooks_app

# The full ingest benchmark (about 8 minutes): tables on stdout, see bench/README.md.
bench: install-dev
	$(BIN)/python -m bench.ingest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
