"""Benchmarks: webhooks_app against floors served by the same gunicorn in the same run."""
