from django.apps import AppConfig


class WebhooksAppConfig(AppConfig):
    name = "webhooks_app"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from webhooks_app import checks, queue, registry, tasks  # noqa: F401 - registers the checks

        registry.autodiscover()
        post_migrate.connect(queue.ensure_schedules, sender=self)
        queue.on_worker_start(tasks.start_worker)
