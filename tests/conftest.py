from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from webhooks_app import queue, refusals
from webhooks_app.conf import webhook_settings

GENERIC_URL = "/webhooks/generic/"


@pytest.fixture(autouse=True)
def _isolated_webhook_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No WEBHOOK_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("WEBHOOK_SECRET_") or name == "WEBHOOK_SIGNATURE_REQUIRED":
            monkeypatch.delenv(name)
    webhook_settings.reload()
    yield
    webhook_settings.reload()


@pytest.fixture(autouse=True)
def _fresh_refusal_counts() -> None:
    """Refusals are logged once per kind per interval: every test starts with none counted."""
    refusals.reset()


@pytest.fixture(autouse=True)
def _empty_broker() -> None:
    """The Redis queue outlives test transactions: start every test with it empty.

    (The ORM broker's queue is a table, emptied with the rest of the test database.)
    """
    if not queue.uses_orm_broker():
        queue.broker().purge_queue()


@pytest.fixture(params=["returning", "fallback"])
def statements(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both paths of the hand-written statements: ``RETURNING``, and the
    fallback of a database without it."""
    from webhooks_app import sql

    if request.param == "fallback":
        monkeypatch.setattr(sql, "supports_returning", lambda vendor: False)
    return str(request.param)


def ago(seconds: float) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


class Ago(float):
    """Seconds before the test runs (cases are built at collection, maybe seconds earlier)."""


def resolved(fields: dict[str, Any]) -> dict[str, Any]:
    """Case fields with each :class:`Ago` turned into a time."""
    return {name: ago(v) if isinstance(v, Ago) else v for name, v in fields.items()}


def queued_tasks() -> int:
    """Tasks waiting in the broker, whichever broker the settings chose."""
    return queue.broker().queue_size()


def sign(body: bytes, secret: str | None = None) -> str:
    secret = settings.SECRET_A if secret is None else secret
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def envelope(workflow: str = "record", webhook_id: str | None = "evt-1", **inputs: Any) -> bytes:
    body: dict[str, Any] = {"workflow_name": workflow, "inputs": inputs}
    if webhook_id is not None:
        body["webhook_id"] = webhook_id
    return json.dumps(body).encode()


PostWebhook = Callable[..., Any]


@pytest.fixture
def post_webhook(client: Client) -> PostWebhook:
    """POST a body to a webhook URL, signed with SECRET_A unless told otherwise."""

    def post(
        body: bytes,
        *,
        signature: str | None = "auto",
        content_type: str = "application/json",
        url: str = GENERIC_URL,
        **headers: str,
    ) -> Any:
        if signature == "auto":
            signature = sign(body)
        if signature is not None:
            headers["HTTP_X_WEBHOOK_SIGNATURE"] = signature
        # CONTENT_TYPE is passed explicitly: the test client drops it for an empty body.
        return client.generic("POST", url, body, CONTENT_TYPE=content_type, **headers)

    return post


@pytest.fixture
def server(transactional_db: None) -> Iterator[Any]:
    """A real gunicorn (2 workers) on the test database; stopped before the database is flushed."""
    from tests.processes import Server

    process = Server(workers=2)
    yield process
    process.stop()


@pytest.fixture
def cluster(transactional_db: None) -> Iterator[Any]:
    """A real ``qcluster`` on the test database and broker."""
    from tests.processes import Cluster

    process = Cluster()
    yield process
    process.stop()


@pytest.fixture
def staff_session(transactional_db: None) -> dict[str, str]:
    """Headers of a logged-in superuser's browser, for a real server: the session cookie and
    the CSRF token that a POST to the staff API (session authentication only) needs."""
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.create_superuser("staff", "staff@example.com", "staff-pw"))
    client.get("/admin/")  # sets the CSRF cookie
    session, csrf = client.cookies["sessionid"].value, client.cookies["csrftoken"].value
    return {"Cookie": f"sessionid={session}; csrftoken={csrf}", "X-CSRFToken": csrf}


VECTORS = Path(__file__).resolve().parent / "vectors" / "vectors.json"


def client_with(*perms: str, staff: bool = True) -> APIClient:
    """An API client logged in as a new user holding ``perms`` (codenames of this app's)."""
    user = User.objects.create_user(f"u{User.objects.count()}", password="pw", is_staff=staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = APIClient()
    client.force_authenticate(user)
    return client


def load_vectors(provider: str) -> list[dict[str, Any]]:
    """The provider's vectors: the published ones (a copy of shared/vectors, kept in the
    repository), plus the Standard Webhooks v1a ones generated with ``cryptography``."""
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))[provider]
    return vectors


@pytest.fixture(autouse=True)
def _fresh_database_sources() -> Iterator[None]:
    """Each process caches the database sources: no test sees another's (their rows are gone)."""
    from webhooks_app import sources

    sources.forget()
    yield
    sources.forget()
