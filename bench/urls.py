"""The bench URLconf: the app exactly as a project mounts it, plus the two floors."""

from __future__ import annotations

from django.db.transaction import non_atomic_requests
from django.urls import include, path

from bench.views import NaiveReceiver, PooledNaiveReceiver, bare

urlpatterns = [
    path("floor/bare/", bare),
    path("floor/naive/", non_atomic_requests(NaiveReceiver.as_view())),
    path("floor/naive-pooled/", non_atomic_requests(PooledNaiveReceiver.as_view())),
    path("webhooks/", include("webhooks_app.urls")),
]
