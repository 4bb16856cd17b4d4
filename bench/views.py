"""The two floors, served by the same gunicorn (same settings, middleware) as the app.

``floor-bare``: Django's ceiling, a plain view returning a small JSON body.
``floor-naive``: what a competent developer writes in an afternoon, not a strawman: a DRF view
that checks the HMAC with ``compare_digest`` over the raw body, dedupes with ``get_or_create`` on
a unique column inside a transaction and calls django-q2's ``async_task`` on commit, exactly as
django-q2's documentation shows it (no broker argument: django-q2 then builds one per call).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_q.brokers import Broker, get_broker
from django_q.tasks import async_task
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.common import SECRET
from bench.models import NaiveEvent


@csrf_exempt
def bare(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


class NaiveReceiver(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def post(self, request: Request) -> Response:
        body = request.body
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(
            "sha256=" + digest, request.headers.get("X-Webhook-Signature", "")
        ):
            return Response({"error": "invalid_signature"}, status=401)
        data = json.loads(body)
        with transaction.atomic():
            event, created = NaiveEvent.objects.get_or_create(
                webhook_id=data["webhook_id"], defaults={"payload": data.get("inputs", {})}
            )
            if created:
                transaction.on_commit(lambda: self.enqueue(event.pk))
        if created:
            return Response({"status": "accepted", "id": event.pk}, status=202)
        return Response({"status": "duplicate"}, status=200)

    def enqueue(self, pk: int) -> None:
        async_task("bench.workflows.noop_task", pk)


_broker: tuple[int, Broker] | None = None


class PooledNaiveReceiver(NaiveReceiver):
    """Informational, not a floor: the naive receiver with one broker per process. django-q2's
    ``async_task`` builds a broker per call unless given one, which with Redis is a new
    connection per enqueue; this variant shows how much of floor-naive that is."""

    def enqueue(self, pk: int) -> None:
        global _broker
        if _broker is None or _broker[0] != os.getpid():
            _broker = (os.getpid(), get_broker())
        async_task("bench.workflows.noop_task", pk, broker=_broker[1])
