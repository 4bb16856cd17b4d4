from django.db.transaction import non_atomic_requests
from django.urls import include, path

from bench.views import NaiveReceiver, bare

urlpatterns = [
    path("floor/bare/", bare),
    path("floor/naive/", non_atomic_requests(NaiveReceiver.as_view())),
    path("webhooks/", include("webhooks_app.urls")),
]
