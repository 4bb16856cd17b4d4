"""The two floors, served by the same gunicorn as the app in the same run.

``floor-bare``: Django's ceiling, a view that returns a small JSON body.
``floor-naive``: what a competent developer writes in an afternoon: DRF, an HMAC check over the
raw body, ``get_or_create`` dedupe and ``async_task`` on commit. Honest, not strawmanned: it
uses ``compare_digest`` and a unique column.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_q.tasks import async_task
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.models import NaiveEvent


@csrf_exempt
def bare(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


class NaiveReceiver(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def post(self, request: Request) -> Response:
        body = request.body
        expected = (
            "sha256=" + hmac.new(settings.BENCH_SECRET.encode(), body, hashlib.sha256).hexdigest()
        )
        if not hmac.compare_digest(expected, request.headers.get("X-Webhook-Signature", "")):
            return Response({"error": "invalid_signature"}, status=401)
        data = json.loads(body)
        with transaction.atomic():
            event, created = NaiveEvent.objects.get_or_create(
                webhook_id=data["webhook_id"], defaults={"payload": data.get("inputs", {})}
            )
            if created:
                transaction.on_commit(lambda: async_task("bench.workflows.noop_task", event.pk))
        return Response(
            {"status": "accepted" if created else "duplicate"}, status=202 if created else 200
        )
