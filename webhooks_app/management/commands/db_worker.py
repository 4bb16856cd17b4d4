"""``manage.py db_worker``: django-tasks-db's worker, which first starts what a webhooks worker
needs when ``WEBHOOKS["TASK_RUNNER"]`` is ``"django_tasks"``: the heartbeat that renews the
leases of its attempts and recovers what lost workers left (its first beat takes back a killed
worker's attempts, before any task arrives).

Django's Tasks framework has no signal for a worker's start, so this command takes the place of
django-tasks-db's own: ``webhooks_app`` comes before ``django_tasks_db`` in ``INSTALLED_APPS``
(system check ``webhooks_app.E014``). Everything else is django-tasks-db's, options included.
"""

from __future__ import annotations

import os
from typing import Any

from django.utils.autoreload import DJANGO_AUTORELOAD_ENV
from django_tasks_db.management.commands import db_worker

from webhooks_app.conf import webhook_settings
from webhooks_app.queue import django_tasks


class Command(db_worker.Command):
    def handle(self, *args: Any, **options: Any) -> None:
        # With --reload this process only watches the code; the child it starts (with
        # DJANGO_AUTORELOAD_ENV set) runs the tasks, and the heartbeat belongs there.
        runs_tasks = not options["reload"] or os.environ.get(DJANGO_AUTORELOAD_ENV) == "true"
        if runs_tasks and webhook_settings.TASK_RUNNER == django_tasks.RUNNER:
            django_tasks.worker_started()
        super().handle(*args, **options)
