"""A partial index of the running attempts per workflow: what a concurrency limit counts at
every claim of its workflow's events (see the model's ``Meta.indexes``). Built
``CONCURRENTLY`` on PostgreSQL (so outside a transaction): deliveries and attempts go on while
it builds on a large table; elsewhere a plain ``CREATE INDEX``."""

from django.db import migrations, models

INDEX = models.Index(
    fields=["workflow_name"],
    name="webhooks_ev_running_idx",
    condition=models.Q(status="running"),
)


def create_index(apps, schema_editor):
    model = apps.get_model("webhooks_app", "WebhookEvent")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.add_index(model, INDEX, concurrently=True)
    else:
        schema_editor.add_index(model, INDEX)


def drop_index(apps, schema_editor):
    model = apps.get_model("webhooks_app", "WebhookEvent")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.remove_index(model, INDEX, concurrently=True)
    else:
        schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("webhooks_app", "0009_database_sources"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create_index, drop_index, elidable=False)],
            state_operations=[migrations.AddIndex(model_name="webhookevent", index=INDEX)],
        ),
    ]
