from django.db.transaction import non_atomic_requests
from django.urls import path
from rest_framework.routers import SimpleRouter

from webhooks_app.api import (
    SchemaView,
    SourceControlViewSet,
    WebhookAlertViewSet,
    WebhookEventViewSet,
    WebhookReplayViewSet,
    WorkflowControlViewSet,
)
from webhooks_app.views import HealthView, MetricsView, WebhookView

app_name = "webhooks_app"

router = SimpleRouter()
router.register("api/events", WebhookEventViewSet, basename="event")
router.register("api/sources", SourceControlViewSet, basename="source")
router.register("api/workflows", WorkflowControlViewSet, basename="workflow")
router.register("api/alerts", WebhookAlertViewSet, basename="alert")
router.register("api/replays", WebhookReplayViewSet, basename="replay")

urlpatterns = [
    path("health/", HealthView.as_view(), name="health"),
    path("metrics/", MetricsView.as_view(), name="metrics"),
    # Right after the single-segment names it must not capture: deliveries are the traffic,
    # and every pattern tried before this one costs each of them a match.
    path("<str:source>/", non_atomic_requests(WebhookView.as_view()), name="receive"),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    *router.urls,
]
