from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/", include("webhooks_app.urls")),
]

# The admin's CSS under gunicorn in development (DEBUG only; serve static files properly in
# production, e.g. collectstatic behind nginx or WhiteNoise).
urlpatterns += staticfiles_urlpatterns()
