from django.db.transaction import non_atomic_requests
from django.urls import path

from webhooks_app.views import HealthView, WebhookView

app_name = "webhooks_app"

urlpatterns = [
    path("health/", HealthView.as_view(), name="health"),
    path("<str:source>/", non_atomic_requests(WebhookView.as_view()), name="receive"),
]
