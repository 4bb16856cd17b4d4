"""The demo project under an ASGI server (``uvicorn project.asgi:application``).

Django's ASGI handler reads a request's whole body before the view runs; the app's
:class:`~webhooks_app.asgi.WebhookBodyLimit` keeps webhook bodies within ``MAX_BODY_BYTES``.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_application = get_asgi_application()

from webhooks_app.asgi import WebhookBodyLimit  # noqa: E402 - needs the app registry ready

application = WebhookBodyLimit(django_application)
