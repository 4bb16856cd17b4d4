# make run   — set everything up on a fresh machine and start the demo (web + qcluster);
#              installs requirements.txt only
# make test  — the whole test suite (SQLite + ORM broker; DATABASE_URL/REDIS_URL switch it)
# make test-tasks — the runner's tests on Django's Tasks framework: TASK_RUNNER "django_tasks",
#              django-tasks-db's db_worker in place of qcluster (tests/settings_tasks.py)
# make lint  — ruff and mypy (both install requirements-dev.txt)
# make docs  — the documentation site into var/site, every warning an error (.venv/bin/mkdocs serve previews it)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test test-tasks lint bench docs install install-dev clean

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

# Every test of what the runner does (enqueue, retries, leases, recovery, ordering, pause,
# limits, bulk replay; end to end, kill -9 included) on Django's Tasks framework. Deselected:
# what only django-q2 has — its timeout (db_worker has none), the cluster state it publishes,
# its scheduler (there retries are rows deferred with run_after, and recovery is the heartbeat's).
TASKS_TESTS := tests/test_queue.py tests/test_queue_django_tasks.py tests/test_tasks.py \
	tests/test_lifecycle.py tests/test_heartbeat.py tests/test_recovery.py \
	tests/test_end_to_end.py tests/test_leases.py tests/test_steering.py tests/test_replays.py
DJANGO_Q_ONLY := \
	tests/test_end_to_end.py::test_a_workflow_over_the_timeout_is_a_failed_attempt_and_retried \
	tests/test_end_to_end.py::test_health_sees_the_running_cluster \
	tests/test_recovery.py::test_recovery_schedule_exists_and_the_scheduler_runs_it \
	tests/test_tasks.py::test_a_retry_with_backoff_is_scheduled_with_literal_args

test-tasks: install-dev
	$(BIN)/python -m pytest --ds=tests.settings_tasks $(TASKS_TESTS) \
		$(addprefix --deselect ,$(DJANGO_Q_ONLY)) $(PYTEST_ARGS)

docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy webhooks_app

# The full ingest benchmark (about 8 minutes): tables on stdout, see bench/README.md.
bench: install-dev
	$(BIN)/python -m bench.ingest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
