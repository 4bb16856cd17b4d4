"""Sources in the database (contract §12): WebhookSource, its encrypted secrets, and the one-row
stamp each process reads to know when to reload them."""

import django.db.models.deletion
import django.utils.timezone
import webhooks_app.source_validation
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks_app', '0008_payload_search_index'),
    ]

    operations = [
        migrations.CreateModel(
            name='SourceVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('stamp', models.CharField(max_length=32)),
            ],
        ),
        migrations.CreateModel(
            name='WebhookSource',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.SlugField(max_length=64, unique=True, validators=[webhooks_app.source_validation.validate_source_name])),
                ('scheme', models.CharField(max_length=64, validators=[webhooks_app.source_validation.validate_scheme])),
                ('enabled', models.BooleanField(default=True, help_text='A disabled source answers 404.')),
                ('routes', models.JSONField(blank=True, default=dict)),
                ('options', models.JSONField(blank=True, default=dict)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'verbose_name': 'webhook source',
                'ordering': ['name'],
            },
        ),
        migrations.CreateModel(
            name='WebhookSourceSecret',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('label', models.CharField(blank=True, max_length=100)),
                ('ciphertext', models.TextField(editable=False)),
                ('fingerprint', models.CharField(editable=False, max_length=16)),
                ('not_after', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('source', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='secrets', to='webhooks_app.webhooksource')),
            ],
            options={
                'verbose_name': 'webhook source secret',
                'ordering': ['-created_at', '-id'],
            },
        ),
    ]
