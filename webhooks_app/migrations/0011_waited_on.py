"""The flag an event that waits for its key or a concurrency slot sets on what holds it back
(see the model's ``waited_on``). A constant database default: PostgreSQL adds the column
without rewriting the table."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks_app", "0010_running_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookevent",
            name="waited_on",
            field=models.BooleanField(db_default=False, default=False),
        ),
    ]
