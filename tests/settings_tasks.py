"""tests.settings on Django's Tasks framework (contract §14): ``TASK_RUNNER = "django_tasks"``
with django-tasks-db's database backend, whose ``db_worker`` the process tests start in place of
``qcluster`` (tests/processes.py). ``make test-tasks`` runs the suite's runner-level tests on it.

django_q stays installed: test modules import its models (the django-q2 tests that the leg
deselects live beside the others), and the runner never touches it.
"""

from __future__ import annotations

import django

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, WEBHOOKS

# After webhooks_app, whose db_worker (with the heartbeat) then wins over django_tasks_db's.
INSTALLED_APPS = [
    *INSTALLED_APPS,
    *(["django_tasks"] if django.VERSION < (6,) else []),  # the backport's system checks
    "django_tasks_db",
]

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

WEBHOOKS = {**WEBHOOKS, "TASK_RUNNER": "django_tasks"}
