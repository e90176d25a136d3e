"""The API's root under /api/v1/: every app's routes, the OpenAPI schema and its viewers."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("", include("governance.api.urls")),
    path("", include("agents.api.urls")),
    path("", include("orchestrator.api.routes")),
    path("", include("audit.api.urls")),
    path("webhooks/", include("governance.api.webhook_urls")),
    path("hooks/", include("orchestrator.api.hook_urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]
