"""A GIN index over the payload on PostgreSQL, for payload search (contract §10).

``jsonb_path_ops`` indexes every path-to-value of the payload, which is what a containment
query (``payload @> '{"data": {"object": {"customer": "cus_123"}}}'``) looks up: one index
serves any path, so no index per searched field. Built ``CONCURRENTLY`` (so outside a
transaction): on a table already holding millions of events, deliveries keep being stored
while it builds. Other databases search with their JSON functions and get no index here.
"""

from django.db import migrations

INDEX = "webhooks_ev_payload_gin_idx"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        table = apps.get_model("webhooks_app", "WebhookEvent")._meta.db_table
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON {table} "
            "USING gin (payload jsonb_path_ops)"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("webhooks_app", "0007_replays_and_alerts"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index, elidable=False),
    ]
